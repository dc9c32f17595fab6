#!/usr/bin/env bash
# Runs every test: unit, store conformance and end-to-end, on SQLite and on a throwaway
# PostgreSQL 15 (started here, stopped on exit). Extra arguments go to `cargo nextest run`
# (or `cargo test`). With CI=true, nextest uses its `ci` profile (.config/nextest.toml).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
eval "$(scripts/postgres-for-tests.sh start)"
trap 'scripts/postgres-for-tests.sh stop' EXIT
export XEROTIER_REQUIRE_POSTGRES=1

# The end-to-end suite runs the real router, XEM and xeroctl binaries from target/<profile>/;
# it never builds them itself. The XEM's fault injection (for the rotation crash tests) is
# compiled in only with its `test-faults` feature, which release builds never have
# (scripts/check-release-no-test-faults.sh).
# The alert rules: syntax, then their unit tests (every rule firing and not firing).
promtool check rules deploy/prometheus/xerotier-alerts.yaml
promtool test rules deploy/prometheus/xerotier-alerts.test.yaml

features=(--features xerotier-xem/test-faults,xerotier-router/test-faults)
cargo build --workspace --bins --locked "${features[@]}"

# The same features for the test build, so that it never rebuilds a binary differently.
if cargo nextest --version >/dev/null 2>&1; then
  profile=()
  [ "${CI:-}" = true ] && profile=(--profile ci)
  cargo nextest run --workspace --locked "${features[@]}" "${profile[@]}" --no-fail-fast "$@"
else
  echo "cargo-nextest not found; using cargo test" >&2
  cargo test --workspace --locked "${features[@]}" --no-fail-fast "$@"
fi
