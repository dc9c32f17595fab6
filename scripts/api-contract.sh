#!/usr/bin/env bash
# API contract check (issue 10): schemathesis, with every check it has, against a live router
# (SQLite, HTTPS with its own CA), from the router's own `GET /v1/openapi.json`. Any finding
# fails the run (exit 1).
#
#   scripts/api-contract.sh [MAX_EXAMPLES]      (default 25 test cases per operation and phase;
#                                                CI: 100, about a minute after a debug build)
#
# The router and XEM binaries are target/${XEROTIER_CONTRACT_PROFILE:-debug}/ (built if
# missing). Schemathesis comes from PyPI at a pinned version, into .venv-contract/. The store is
# SQLite in a temporary state dir, or XEROTIER_CONTRACT_DATABASE_URL (an empty PostgreSQL
# database, e.g. from scripts/postgres-for-tests.sh). One XEM (with no tools) is enrolled and
# connected, so that the agent routes meet a real agent (schemathesis finds its id in listings).
#
# Keys. Its stateful phase calls every operation with whatever ids it has seen, revoking and
# rotating API keys included (and it sends `allow_lockout: true`), so the run must not depend on
# a key it can revoke:
#   pass 1 ("main")    every operation except those that end a credential the run depends on
#                      (revoke or rotate an API key, revoke an agent's credentials), with a key of
#                      its own: nothing in this pass can take that key (or the XEM) away;
#   pass 2 ("lockout") only the API key operations (create, show, revoke, rotate) and the
#                      agents' listing and revocation, with a throwaway management key, last:
#                      whatever it revokes (itself included, with `allow_lockout`) is what this
#                      pass tests, and nothing runs after it. The bootstrap key only makes the
#                      two keys and is never handed to schemathesis.
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION=4.32.5
MAX_EXAMPLES=${1:-25}
PROFILE=${XEROTIER_CONTRACT_PROFILE:-debug}
ROUTER="$PWD/target/$PROFILE/xerotier-router"
XEM="$PWD/target/$PROFILE/xerotier-xem"
VENV="$PWD/.venv-contract"
CONFIG="$PWD/scripts/api-contract.toml"

if [ ! -x "$ROUTER" ] || [ ! -x "$XEM" ]; then
  if [ "$PROFILE" = release ]; then cargo build --release --bin xerotier-router --bin xerotier-xem
  else cargo build --bin xerotier-router --bin xerotier-xem; fi
fi
if ! "$VENV/bin/schemathesis" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

WORK=$(mktemp -d)
ROUTER_PID=
XEM_PID=
stop() { # $1 = pid
  if [ -n "$1" ] && kill -0 "$1" 2>/dev/null; then
    kill -TERM "$1"
    wait "$1" 2>/dev/null || true
  fi
}
stop_all() { stop "$XEM_PID"; XEM_PID=; stop "$ROUTER_PID"; ROUTER_PID=; }
cleanup() { stop_all; rm -rf "$WORK"; }
trap cleanup EXIT INT TERM

# Schemathesis sends many requests without a key on purpose (the `ignored_auth` check): the
# per-address failure limit (documented 429) would otherwise throttle the rest of the run.
DATABASE=()
[ -n "${XEROTIER_CONTRACT_DATABASE_URL:-}" ] && DATABASE=(--database-url "$XEROTIER_CONTRACT_DATABASE_URL")
"$ROUTER" new-master-key "$WORK/master.key" >/dev/null
"$ROUTER" "${DATABASE[@]}" --state-dir "$WORK/state" --listen 127.0.0.1:0 \
  --master-key-file "$WORK/master.key" \
  --mesh-bind tcp://127.0.0.1:0 \
  --auth-failure-burst 1000000 --auth-failures-per-minute 1000000 --log-level warn \
  >"$WORK/router.log" 2>&1 &
ROUTER_PID=$!
for _ in $(seq 1 300); do
  [ -s "$WORK/state/http.addr" ] && [ -s "$WORK/state/bootstrap.key" ] && break
  kill -0 "$ROUTER_PID" 2>/dev/null || { cat "$WORK/router.log" >&2; exit 1; }
  sleep 0.1
done
BASE="https://$(cat "$WORK/state/http.addr")"
CA="$WORK/state/tls/ca.pem"
for _ in $(seq 1 100); do
  curl -fsS --cacert "$CA" "$BASE/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done

# A key of the run's own, made with the bootstrap key; its value goes to a 0600 file only.
new_key() { # $1 = name
  (umask 077; curl -fsS --cacert "$CA" -H "Authorization: Bearer $(cat "$WORK/state/bootstrap.key")" \
    -H 'Content-Type: application/json' \
    -d "{\"name\":\"$1\",\"scopes\":[\"management\",\"execution\"]}" \
    "$BASE/v1/management/api-keys" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["value"])' >"$WORK/$1.key")
}
new_key contract-main
new_key contract-lockout

# The XEM: a join key (to a 0600 file), then enrollment and a CURVE session. It offers no
# tools; its tool user is `nobody`, which every machine has (a fresh CI machine has no
# `xerotier-tool` user, and the XEM refuses to start without its tool user).
mkdir -p "$WORK/xem/tools"
install -d -m 0700 "$WORK/xem/credentials"
(umask 077; curl -fsS --cacert "$CA" -H "Authorization: Bearer $(cat "$WORK/state/bootstrap.key")" \
  -H 'Content-Type: application/json' -d '{"name":"contract-xem","ttl_seconds":300}' \
  "$BASE/v1/management/join-keys" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])' >"$WORK/xem/join.key")
XEM_JOIN_KEY_FILE="$WORK/xem/join.key" "$XEM" --router-url "$BASE" \
  --registration-name contract-xem --tools-dir "$WORK/xem/tools" \
  --credentials-dir "$WORK/xem/credentials" --state-dir "$WORK/xem/state" \
  --signing-key-path "$WORK/xem/signing.hex" --curve-key-path "$WORK/xem/curve.hex" \
  --lease-renewal-interval-ms 1000 --log-level warn --tool-user nobody >"$WORK/xem.log" 2>&1 &
XEM_PID=$!
agent_active() {
  curl -fsS --cacert "$CA" -H "Authorization: Bearer $(cat "$WORK/contract-main.key")" \
    "$BASE/v1/management/agents" |
    python3 -c 'import json,sys; sys.exit(0 if any(a["status"]=="active" for a in json.load(sys.stdin)["data"]) else 1)'
}
for _ in $(seq 1 100); do agent_active 2>/dev/null && break; sleep 0.1; done
agent_active || { echo "the XEM did not connect" >&2; cat "$WORK/xem.log" >&2; exit 1; }

# One worker: schemathesis's threads trip a CPython 3.11 bug fixed in 3.11.8 ("AST constructor
# recursion depth mismatch", gh-106905), and the router shares the machine's two cores anyway.
# One retry of a request that failed at the network level: about one run in seven lost a
# keep-alive connection mid-request ("EOF occurred in violation of protocol", cause not found);
# a router that crashed or logged an internal error still fails the run (below).
run_pass() { # $1 = name, $2 = key name, then filters
  local name=$1 key=$2
  shift 2
  echo "== schemathesis: pass $name"
  "$VENV/bin/schemathesis" --config-file "$CONFIG" run "$BASE/v1/openapi.json" \
    --tls-verify "$CA" -H "Authorization: Bearer $(cat "$WORK/$key.key")" \
    --checks all --max-examples "$MAX_EXAMPLES" --workers 1 --request-retries 1 --no-color \
    "$@"
}

START=$SECONDS
status=0
run_pass main contract-main \
  --exclude-path-regex '^/v1/management/(api-keys/\{id\}/(revoke|rotate)|agents/\{id\}/revoke-credentials)$' ||
  status=1
run_pass lockout contract-lockout \
  --include-path-regex '^/v1/management/(api-keys(/\{id\}(/(revoke|rotate))?)?|agents(/\{id\}/revoke-credentials)?)$' ||
  status=1
kill -0 "$ROUTER_PID" 2>/dev/null || { echo "the router died during the run" >&2; status=1; }
stop_all
[ $status = 0 ] || { echo "-- router log (last 40 lines) --" >&2; tail -n 40 "$WORK/router.log" >&2; }
if grep -E 'panicked|internal error' "$WORK/router.log" >&2; then
  echo "the router logged errors during the run (above)" >&2
  status=1
fi
echo "API contract: $([ $status = 0 ] && echo clean || echo FINDINGS) in $((SECONDS - START)) s (max $MAX_EXAMPLES examples per operation)"
exit $status
