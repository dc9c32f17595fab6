#!/usr/bin/env bash
# Starts a local router on the embedded SQLite store (state in .xerotier-local/) and prints
# what to do next. Ctrl-C stops it; running it again keeps the state.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo build --release --bins
ROOT="$PWD/.xerotier-local"
mkdir -p "$ROOT"
LISTEN="${XEROTIER_QUICKSTART_LISTEN:-127.0.0.1:8080}"
./target/release/xerotier-router --state-dir "$ROOT/router" --listen "$LISTEN" \
  >"$ROOT/router.log" 2>&1 &
ROUTER_PID=$!
trap 'kill "$ROUTER_PID" 2>/dev/null; wait "$ROUTER_PID" 2>/dev/null' EXIT INT TERM
for _ in $(seq 1 100); do
  [ -s "$ROOT/router/http.addr" ] && curl -fsS "http://$(cat "$ROOT/router/http.addr")/healthz" >/dev/null 2>&1 && break
  kill -0 "$ROUTER_PID" 2>/dev/null || { echo "router failed to start:" >&2; cat "$ROOT/router.log" >&2; exit 1; }
  sleep 0.1
done
ADDR=$(cat "$ROOT/router/http.addr")
cat <<NEXT

Xerotier router is running: http://$ADDR (state: $ROOT/router, log: $ROOT/router.log)

Next steps, in another shell:
  export PATH="$PWD/target/release:\$PATH"
  export XEROCTL_BASE_URL=http://$ADDR
  export XEROCTL_API_KEY=\$(cat $ROOT/router/bootstrap.key)   # the admin key, created on first start

  xeroctl keys create --scope execution --name fleet-ops-2026q1
  xeroctl keys create --scope execution --name fleet-ops-2026q2
  xeroctl keys revoke --name fleet-ops-2026q1
  xeroctl keys --include-revoked
  xeroctl audit

Press Ctrl-C to stop the router.
NEXT
wait "$ROUTER_PID"
