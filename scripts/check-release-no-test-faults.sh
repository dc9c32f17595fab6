#!/usr/bin/env bash
# Proves that the XEM's test fault injection (crashes at rotation steps, forged
# acknowledgements; crates/xerotier-xem/src/test_faults.rs, feature `test-faults`) is not in
# the release binaries: no fault name and no XEROTIER_XEM_TEST_FAULT, so no environment can
# switch it on in production.
#
# The names are read out of the fault module itself (so the list cannot go stale), and the
# check is shown able to fail: a debug build WITH the feature must contain every one of them.
#
# Usage: scripts/check-release-no-test-faults.sh   (exit 0: clean; 1: a name found, or the
# check could not be made meaningful)
set -euo pipefail
cd "$(dirname "$0")/.."

MODULE=crates/xerotier-xem/src/test_faults.rs
RELEASE_BINS=(target/release/xerotier-xem target/release/xerotier-router)
FAULT_BIN=target/debug/xerotier-xem

fail() {
  echo "check-release-no-test-faults: FAIL: $*" >&2
  exit 1
}

[ -f "$MODULE" ] || fail "$MODULE not found"

# Every name the fault code would leave in a binary:
#  - the environment variable (the ENV_VAR constant),
#  - the fault names the variable takes (the string literals of TestFault::parse),
#  - the variant names (their derived Debug strings, logged when a fault is armed),
#  - the type name (in the symbols of its methods).
env_var=$(sed -nE 's/^const ENV_VAR: &str = "([A-Z0-9_]+)";$/\1/p' "$MODULE")
fault_names=$(grep -oE '^ *"[a-z0-9_]+" => Self::' "$MODULE" | sed -E 's/^ *"([a-z0-9_]+)".*/\1/')
variants=$(sed -n '/^enum TestFault {/,/^}/p' "$MODULE" | sed -nE 's/^ +([A-Z][A-Za-z0-9]+),$/\1/p')
mapfile -t NAMES < <(printf '%s\n' "$env_var" $fault_names $variants TestFault | sed '/^$/d' | sort -u)

[ -n "$env_var" ] || fail "could not read the environment variable name from $MODULE"

# The router's faults (skip its argument check, hostile invocation ids, so the XEM's own checks
# can be tested) and its shifted clock (XEROTIER_ROUTER_TEST_CLOCK_OFFSET_MS, a replica whose
# clock lags): every `const NAME: &str = "…";` of the module, environment variables included.
ROUTER_MODULE=crates/xerotier-router/src/test_faults.rs
ROUTER_FAULT_BIN=target/debug/xerotier-router
[ -f "$ROUTER_MODULE" ] || fail "$ROUTER_MODULE not found"
mapfile -t ROUTER_NAMES < <(sed -nE 's/^const [A-Z_]+: &str = "([A-Za-z0-9_]+)";$/\1/p' "$ROUTER_MODULE")
[ ${#ROUTER_NAMES[@]} -ge 2 ] || fail "could not read the router's fault names from $ROUTER_MODULE"
for required in XEROTIER_ROUTER_TEST_FAULT XEROTIER_ROUTER_TEST_CLOCK_OFFSET_MS; do
  printf '%s\n' "${ROUTER_NAMES[@]}" | grep -qxF "$required" ||
    fail "$required was not read from $ROUTER_MODULE; the script's pattern no longer matches it"
done
echo "router fault names taken from $ROUTER_MODULE: ${ROUTER_NAMES[*]}"
n_faults=$(printf '%s\n' $fault_names | sed '/^$/d' | wc -l)
n_variants=$(printf '%s\n' $variants | sed '/^$/d' | wc -l)
if [ "$n_faults" -lt 1 ] || [ "$n_faults" -ne "$n_variants" ]; then
  fail "read $n_faults fault names and $n_variants variants from $MODULE; the script's patterns no longer match the module"
fi
echo "names taken from $MODULE (${#NAMES[@]}): ${NAMES[*]}"

# Names present in a binary, one per line.
names_in() {
  local bin=$1 name
  for name in "${NAMES[@]}"; do
    if grep -aqF -- "$name" "$bin"; then echo "$name"; fi
  done
}

echo "building the release binaries (cargo build --release --locked -p xerotier-xem -p xerotier-router)"
cargo build --release --locked -p xerotier-xem -p xerotier-router

echo "building debug xerotier-xem and xerotier-router WITH --features test-faults (the control: the check must be able to fail)"
cargo build --locked -p xerotier-xem --features test-faults
cargo build --locked -p xerotier-router --features test-faults
for name in "${ROUTER_NAMES[@]}"; do
  grep -aqF -- "$name" "$ROUTER_FAULT_BIN" ||
    fail "the --features test-faults router lacks $name: the check would prove nothing"
done
echo "control ok: $ROUTER_FAULT_BIN (with test-faults) contains ${ROUTER_NAMES[*]}"

# The control: every name must be found in the binary that has the fault code, or the search
# would pass vacuously (a pattern or a name that can never match).
missing=()
for name in "${NAMES[@]}"; do
  grep -aqF -- "$name" "$FAULT_BIN" || missing+=("$name")
done
[ ${#missing[@]} -eq 0 ] ||
  fail "the --features test-faults build lacks ${missing[*]}: the check would prove nothing"
echo "control ok: $FAULT_BIN (with test-faults) contains all ${#NAMES[@]} names"
# The release binaries must contain neither the XEM's nor the router's names.
NAMES+=("${ROUTER_NAMES[@]}")

status=0
for bin in "${RELEASE_BINS[@]}"; do
  [ -s "$bin" ] || fail "$bin was not built"
  found=$(names_in "$bin")
  if [ -n "$found" ]; then
    echo "check-release-no-test-faults: FAIL: $bin contains test-fault names:" $found >&2
    status=1
  else
    echo "ok: $bin ($(stat -c %s "$bin") bytes) contains none of the ${#NAMES[@]} names"
  fi
done
[ $status -eq 0 ] || fail "test fault injection is compiled into a release binary (is the test-faults feature on by default, or enabled by another crate?)"
echo "check-release-no-test-faults: passed"
