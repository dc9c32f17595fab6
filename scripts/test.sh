#!/usr/bin/env bash
# Runs every test: unit, store conformance and end-to-end, on SQLite and on a throwaway
# PostgreSQL 15 (started here, stopped on exit).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
eval "$(scripts/postgres-for-tests.sh start)"
trap 'scripts/postgres-for-tests.sh stop' EXIT
export XEROTIER_REQUIRE_POSTGRES=1
# The end-to-end tests run the real binaries; build them all first.
cargo build --workspace --bins
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  echo "cargo-nextest not found; using cargo test" >&2
  cargo test --workspace --no-fail-fast "$@"
fi
