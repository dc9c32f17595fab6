#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets/) for SECONDS each, default 30: one target at a
# time, one process, seeded from fuzz/corpus/<target>/ (read only: what a run finds goes to a
# scratch directory; `cargo +nightly fuzz cmin` it into the corpus by hand when it is worth
# keeping). Prints each target's figures and exits non-zero if any target crashed, panicked,
# hung (-timeout), or went over the memory limits; the failing input is in fuzz/artifacts/.
#
# Needs the nightly toolchain (cargo fuzz builds with -Zsanitizer=address). Without it this
# warns loudly and exits 0: CI must not depend on downloading a toolchain.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-30}"
targets=(mesh_frame enroll_request manifest_and_schema)

if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    echo "=================================================================" >&2
    echo "WARNING: no nightly toolchain; the fuzz targets were NOT run." >&2
    echo "         (rustup toolchain install nightly, then scripts/fuzz.sh)" >&2
    echo "=================================================================" >&2
    exit 0
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

# libFuzzer's last status line (`#N DONE cov: … ft: … corp: 12/3Kb …`) and its final stats.
status_field() { sed -nE "s/.* $2: ([0-9]+(\/[0-9]+[a-zA-Z]*)?).*/\\1/p" <<<"$1"; }
final_stat() { sed -nE "s/^stat::$2:[[:space:]]+([0-9]+).*/\\1/p" "$1" | tail -1; }

cargo +nightly fuzz build
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
failed=()
printf '%-22s %12s %9s %7s %7s %8s %8s %s\n' target execs exec/s cov ft corpus rss_mb result
for target in "${targets[@]}"; do
    mkdir -p "$scratch/$target"
    log="$scratch/$target.log"
    # No -jobs/-workers: libFuzzer then runs exactly one process, in the foreground.
    if cargo +nightly fuzz run "$target" "$scratch/$target" "fuzz/corpus/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -max_len=65536 \
        -print_final_stats=1 >"$log" 2>&1; then
        result=ok
    else
        result=FAILED
        failed+=("$target")
    fi
    done_line="$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -1 || true)"
    printf '%-22s %12s %9s %7s %7s %8s %8s %s\n' "$target" \
        "$(final_stat "$log" number_of_executed_units)" \
        "$(final_stat "$log" average_exec_per_sec)" "$(status_field "$done_line" cov)" \
        "$(status_field "$done_line" ft)" "$(status_field "$done_line" corp)" \
        "$(final_stat "$log" peak_rss_mb)" "$result"
    if [[ "$result" != ok ]]; then
        echo "---- $target: last lines of the fuzzer's output ----" >&2
        tail -40 "$log" >&2
    fi
done
if ((${#failed[@]})); then
    echo "fuzz: FAILED: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
echo "fuzz: every target ran ${seconds}s with no crash, hang or memory blow-up"
