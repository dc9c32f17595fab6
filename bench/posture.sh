#!/usr/bin/env bash
# Posture report latency for 10,000 credentials, as a ratio against baselines measured in the
# same run on the same router: GET /healthz and GET /v1/management/api-keys?limit=100.
# Usage: ROUTER_BIN=target/release/xerotier-router N=10000 bench/posture.sh
#        DATABASE_URL=postgres://…/fresh_db bench/posture.sh   # the same on PostgreSQL
# DATABASE_URL must name an empty database (bench/run.sh's `posture` section makes one).
set -euo pipefail
ROUTER_BIN=${ROUTER_BIN:-target/release/xerotier-router}
N=${N:-10000}
ROUNDS=${ROUNDS:-10}
DATABASE_URL=${DATABASE_URL:-}
dir=$(mktemp -d)
port=$((20000 + RANDOM % 20000))
db=(); [ -n "$DATABASE_URL" ] && db=(--database-url "$DATABASE_URL")
"$ROUTER_BIN" new-master-key "$dir/master.key" >/dev/null
"$ROUTER_BIN" --insecure-http --listen "127.0.0.1:$port" --state-dir "$dir" "${db[@]}" \
  --master-key-file "$dir/master.key" --mesh-bind tcp://127.0.0.1:0 --log-level warn >"$dir/router.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 100); do [ -s "$dir/bootstrap.key" ] && break; sleep 0.1; done
key=$(cat "$dir/bootstrap.key")
# N API keys straight into the store (the report reads them like any other).
if [ -n "$DATABASE_URL" ]; then
  psql -q "$DATABASE_URL" -c "INSERT INTO api_keys (id, name, scopes, verifier, created_at)
    SELECT 'key_bench' || lpad(i::text, 21, '0'), 'bench-' || i, 'execution', 'v', 1700000000000 + i
    FROM generate_series(0, $N - 2) AS i" >/dev/null
else
  python3 - "$dir/router.db" "$N" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1]); n = int(sys.argv[2])
db.executemany(
    "INSERT INTO api_keys (id, name, scopes, verifier, created_at) VALUES (?, ?, 'execution', 'v', ?)",
    [(f"key_bench{i:021d}", f"bench-{i}", 1_700_000_000_000 + i) for i in range(n - 1)])
db.commit()
PY
fi
url="http://127.0.0.1:$port"
mean() { # path, auth?: mean seconds of $ROUNDS sequential requests
  local total=0 t
  for _ in $(seq "$ROUNDS"); do
    t=$(curl -s -o /dev/null -w '%{time_total}' ${2:+-H "Authorization: Bearer $key"} "$url$1")
    total=$(python3 -c "print($total + $t)")
  done
  python3 -c "print($total / $ROUNDS)"
}
mean /v1/management/credentials auth >/dev/null # warm up
health=$(mean /healthz)
page=$(mean "/v1/management/api-keys?limit=100" auth)
report=$(mean /v1/management/credentials auth)
rows=$(curl -s -H "Authorization: Bearer $key" "$url/v1/management/credentials" | python3 -c "import json,sys; print(len(json.load(sys.stdin)['credentials']))")
python3 - "$health" "$page" "$report" "$rows" "${DATABASE_URL:+postgres}" <<'PY'
import sys
h, p, r, n = map(float, sys.argv[1:5])
backend = sys.argv[5] or "sqlite"
print(f"backend={backend} rows={int(n)} healthz={h*1000:.2f}ms api-keys?limit=100={p*1000:.2f}ms "
      f"report={r*1000:.1f}ms report/healthz={r/h:.0f}x report/page100={r/p:.1f}x")
PY
