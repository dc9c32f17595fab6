#!/usr/bin/env bash
# Benchmarks for docs/BENCHMARKS.md. Loopback only; every loop is bounded in time.
#   bench/run.sh            # all of them
#   SECTIONS="exec keys" bench/run.sh
#   ROUTER_BIN=… XEM_BIN=… bench/run.sh   # the daemons of another build (a before/after pair)
# Prints markdown rows; raw wrk / bench output goes to $OUT (default /tmp/xerotier-bench).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/xerotier-bench}"
SECONDS_PER_RUN="${SECONDS_PER_RUN:-5}"
ROUNDS="${ROUNDS:-3}"
mkdir -p "$OUT"
# A section that fails (set -e) must not leave its router or XEM running: the next run's router
# would find the SQLite store locked.
STARTED=()
cleanup() { for pid in "${STARTED[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT
for tool in wrk bc; do command -v $tool >/dev/null || { SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo; DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q $tool >&2; }; done
scripts/install-deps.sh
cargo build --release --bins -q
eval "$(scripts/postgres-for-tests.sh start)"
PG_ADMIN="$XEROTIER_TEST_POSTGRES_URL"
PG_BASE="${PG_ADMIN%/*}"

start_router() { # $1 = name, $2 = database url or "", $3 = "tls" for HTTPS (default: plain HTTP)
  local dir="$OUT/$1"; mkdir -p "$dir"
  # A fresh store (PostgreSQL gets a fresh database from fresh_pg): a previous run's agents would
  # hold the registration names, and its address must not pass for this router's.
  rm -rf "$dir/state"
  local db=(); [ -n "$2" ] && db=(--database-url "$2")
  local http=(--insecure-http); [ "${3:-}" = tls ] && http=()
  "${ROUTER_BIN:-./target/release/xerotier-router}" --state-dir "$dir/state" "${http[@]}" --listen 127.0.0.1:0 --mesh-bind tcp://127.0.0.1:0 --log-level "${LOG_LEVEL:-warn}" "${db[@]}" >"$dir/router.log" 2>&1 &
  echo $! >"$dir/pid"; STARTED+=($!)
  for _ in $(seq 1 200); do [ -s "$dir/state/http.addr" ] && break; sleep 0.05; done
  ADDR=$(cat "$dir/state/http.addr"); KEY=$(cat "$dir/state/bootstrap.key")
}
router_pid() { cat "$OUT/$1/pid"; }
cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
stop_router() { kill "$(cat "$OUT/$1/pid")"; wait "$(cat "$OUT/$1/pid")" 2>/dev/null || true; }
rps() { awk '/Requests\/sec/ {print $2}' "$1"; }
SECTIONS="${SECTIONS:-http tls keys enroll fleet rotation exec isolation fairness}"
AGENTS="${AGENTS:-1000}"
want() { case " $SECTIONS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
fresh_pg() { local name="bench_$1_$$"; psql -q "$PG_ADMIN" -c "DROP DATABASE IF EXISTS $name" -c "CREATE DATABASE $name" >/dev/null; echo "$PG_BASE/$name"; }

if want http; then
echo "| backend | /healthz req/s | GET /v1/exec/tools req/s (authenticated) | ratio |"
echo "|---|---|---|---|"
for backend in sqlite postgres; do
  url=""; [ "$backend" = postgres ] && url=$(fresh_pg http)
  start_router "http-$backend" "$url"
  h_sum=0; t_sum=0
  for r in $(seq 1 "$ROUNDS"); do
    wrk -t1 -c32 -d"${SECONDS_PER_RUN}s" "http://$ADDR/healthz" >"$OUT/http-$backend/healthz-$r.txt"
    wrk -t1 -c32 -d"${SECONDS_PER_RUN}s" -H "Authorization: Bearer $KEY" "http://$ADDR/v1/exec/tools" >"$OUT/http-$backend/tools-$r.txt"
    grep -q "Non-2xx" "$OUT/http-$backend/tools-$r.txt" && { echo "tools answered non-2xx" >&2; exit 1; }
    h_sum=$(echo "$h_sum + $(rps "$OUT/http-$backend/healthz-$r.txt")" | bc -l)
    t_sum=$(echo "$t_sum + $(rps "$OUT/http-$backend/tools-$r.txt")" | bc -l)
  done
  stop_router "http-$backend"
  printf "| %s | %.0f | %.0f | %.2f |\n" "$backend" "$(echo "$h_sum/$ROUNDS" | bc -l)" "$(echo "$t_sum/$ROUNDS" | bc -l)" "$(echo "$t_sum/$h_sum" | bc -l)"
done

fi
echo
if want tls; then
# Over HTTPS (the router's own CA; wrk does not verify): keep-alive throughput of an
# authenticated route against /healthz, and new connections per second (Connection: close, so
# every request is a fresh TCP connection and, over TLS, a full handshake) against the same
# over plain HTTP, both routers in this run.
echo "| backend | TLS /healthz req/s | TLS GET /v1/exec/tools req/s | ratio | new conns/s plain | new TLS conns/s | TLS / plain |"
echo "|---|---|---|---|---|---|---|"
for backend in sqlite postgres; do
  url=""; [ "$backend" = postgres ] && url=$(fresh_pg tls)
  start_router "tls-$backend" "$url" tls; TLS_ADDR=$ADDR; TLS_KEY=$KEY
  url2=""; [ "$backend" = postgres ] && url2=$(fresh_pg tlsplain)
  start_router "tlsplain-$backend" "$url2"; PLAIN_ADDR=$ADDR
  for _ in $(seq 1 100); do curl -fsSk "https://$TLS_ADDR/healthz" >/dev/null 2>&1 && break; sleep 0.05; done
  h=0; t=0; p=0; n=0
  for r in $(seq 1 "$ROUNDS"); do
    d="$OUT/tls-$backend"
    wrk -t1 -c32 -d"${SECONDS_PER_RUN}s" "https://$TLS_ADDR/healthz" >"$d/healthz-$r.txt"
    wrk -t1 -c32 -d"${SECONDS_PER_RUN}s" -H "Authorization: Bearer $TLS_KEY" "https://$TLS_ADDR/v1/exec/tools" >"$d/tools-$r.txt"
    grep -q "Non-2xx" "$d/tools-$r.txt" && { echo "tools answered non-2xx" >&2; exit 1; }
    wrk -t1 -c8 -d"${SECONDS_PER_RUN}s" -H "Connection: close" "http://$PLAIN_ADDR/healthz" >"$d/plain-conns-$r.txt"
    wrk -t1 -c8 -d"${SECONDS_PER_RUN}s" -H "Connection: close" "https://$TLS_ADDR/healthz" >"$d/tls-conns-$r.txt"
    h=$(echo "$h + $(rps "$d/healthz-$r.txt")" | bc -l); t=$(echo "$t + $(rps "$d/tools-$r.txt")" | bc -l)
    p=$(echo "$p + $(rps "$d/plain-conns-$r.txt")" | bc -l); n=$(echo "$n + $(rps "$d/tls-conns-$r.txt")" | bc -l)
  done
  stop_router "tls-$backend"; stop_router "tlsplain-$backend"
  printf "| %s | %.0f | %.0f | %.2f | %.0f | %.0f | %.2f |\n" "$backend" "$(echo "$h/$ROUNDS" | bc -l)" "$(echo "$t/$ROUNDS" | bc -l)" "$(echo "$t/$h" | bc -l)" \
    "$(echo "$p/$ROUNDS" | bc -l)" "$(echo "$n/$ROUNDS" | bc -l)" "$(echo "$n/$p" | bc -l)"
done
fi
echo
if want keys; then
echo "| backend | store-only creates/s (floor) | HTTP creates/s | HTTP p50 ms | HTTP p99 ms | HTTP / store |"
echo "|---|---|---|---|---|---|"
for backend in sqlite postgres; do
  if [ "$backend" = postgres ]; then store_url=$(fresh_pg store); url=$(fresh_pg create); else
    mkdir -p "$OUT/store-sqlite"; store_url="sqlite://$OUT/store-sqlite/store.db?mode=rwc"; url=""; fi
  ./target/release/xerotier-bench store-create --database-url "$store_url" --seconds "$SECONDS_PER_RUN" --concurrency 8 >"$OUT/store-$backend.json"
  start_router "create-$backend" "$url"
  ./target/release/xerotier-bench key-create --base-url "http://$ADDR" --api-key "$KEY" --seconds "$SECONDS_PER_RUN" --concurrency 8 >"$OUT/create-$backend.json"
  stop_router "create-$backend"
  python3 - "$backend" "$OUT/store-$backend.json" "$OUT/create-$backend.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[2])); h = json.load(open(sys.argv[3]))
print(f"| {sys.argv[1]} | {s['ops_per_sec']:.0f} | {h['ops_per_sec']:.0f} | {h['p50_ms']:.2f} | {h['p99_ms']:.2f} | {h['ops_per_sec']/s['ops_per_sec']:.2f} |")
PY
done

fi
echo
if want enroll; then
echo "| backend | enrollments/s (mint + enroll, HTTP) | p50 ms | p99 ms | crypto floor ops/s | enroll / floor |"
echo "|---|---|---|---|---|---|"
./target/release/xerotier-bench enroll-crypto-floor --seconds "$SECONDS_PER_RUN" --concurrency 4 >"$OUT/crypto-floor.json"
for backend in sqlite postgres; do
  url=""; [ "$backend" = postgres ] && url=$(fresh_pg enroll)
  start_router "enroll-$backend" "$url"
  ./target/release/xerotier-bench enroll --base-url "http://$ADDR" --api-key "$KEY" --seconds "$SECONDS_PER_RUN" --concurrency 4 >"$OUT/enroll-$backend.json"
  stop_router "enroll-$backend"
  python3 - "$backend" "$OUT/enroll-$backend.json" "$OUT/crypto-floor.json" <<'PY'
import json, sys
e = json.load(open(sys.argv[2])); c = json.load(open(sys.argv[3]))
print(f"| {sys.argv[1]} | {e['ops_per_sec']:.0f} | {e['p50_ms']:.2f} | {e['p99_ms']:.2f} | {c['ops_per_sec']:.0f} | {e['ops_per_sec']/c['ops_per_sec']:.3f} |")
PY
done

fi
echo
if want fleet; then
FLEET_SECONDS="${FLEET_SECONDS:-30}"
echo "| backend | agents | lease interval | renewals sent | acknowledged | router RSS idle → loaded (MiB) | router CPU while renewing (% of one core) |"
echo "|---|---|---|---|---|---|---|"
for backend in sqlite postgres; do
  url=""; [ "$backend" = postgres ] && url=$(fresh_pg fleet)
  start_router "fleet-$backend" "$url"
  pid=$(router_pid "fleet-$backend"); rss0=$(rss_kb "$pid")
  ./target/release/xerotier-bench agents --base-url "http://$ADDR" --api-key "$KEY" --count "$AGENTS" --lease-ms 1000 --seconds "$FLEET_SECONDS" >"$OUT/fleet-$backend.json" 2>"$OUT/fleet-$backend.err" &
  bench=$!
  # Sample CPU over the second half of the renewal phase (after enrollment and connects).
  for _ in $(seq 1 600); do grep -q "renewing leases" "$OUT/fleet-$backend.err" 2>/dev/null && break; sleep 0.1; done
  sleep $((FLEET_SECONDS / 2)); t1=$(cpu_ticks "$pid"); s1=$(date +%s.%N)
  sleep $((FLEET_SECONDS / 3)); t2=$(cpu_ticks "$pid"); s2=$(date +%s.%N); rss1=$(rss_kb "$pid")
  wait "$bench"
  stop_router "fleet-$backend"
  python3 - "$backend" "$OUT/fleet-$backend.json" "$rss0" "$rss1" "$t1" "$t2" "$s1" "$s2" "$(getconf CLK_TCK)" "$AGENTS" <<'PY'
import json, sys
f = json.load(open(sys.argv[2])); rss0, rss1 = int(sys.argv[3]) / 1024, int(sys.argv[4]) / 1024
ticks = int(sys.argv[6]) - int(sys.argv[5]); secs = float(sys.argv[8]) - float(sys.argv[7]); hz = int(sys.argv[9])
print(f"| {sys.argv[1]} | {sys.argv[10]} | 1000 ms | {f['sent']} | {f['ops']} | {rss0:.0f} → {rss1:.0f} | {100 * ticks / hz / secs:.1f} |")
PY
done

fi
echo
if want rotation; then
ROUNDS_ROT="${ROUNDS_ROT:-200}"
echo "| backend | single rotation p50 ms | p99 ms | floor p50 ms (mesh round trip + crypto) | floor p99 ms | p50 / floor | 1,000-agent fleet: last promotion (s) | fleet p50 / p99 (ms) |"
echo "|---|---|---|---|---|---|---|---|"
for backend in sqlite postgres; do
  url=""; [ "$backend" = postgres ] && url=$(fresh_pg rotate)
  start_router "rotate-$backend" "$url"
  ./target/release/xerotier-bench rotate-floor --base-url "http://$ADDR" --api-key "$KEY" --rounds "$ROUNDS_ROT" >"$OUT/rotate-floor-$backend.json"
  ./target/release/xerotier-bench rotate --base-url "http://$ADDR" --api-key "$KEY" --agents 1 --rounds "$ROUNDS_ROT" >"$OUT/rotate-one-$backend.json" 2>/dev/null
  ./target/release/xerotier-bench rotate --base-url "http://$ADDR" --api-key "$KEY" --agents "$AGENTS" --rounds 1 >"$OUT/rotate-fleet-$backend.json" 2>"$OUT/rotate-fleet-$backend.err"
  stop_router "rotate-$backend"
  python3 - "$backend" "$OUT/rotate-one-$backend.json" "$OUT/rotate-floor-$backend.json" "$OUT/rotate-fleet-$backend.json" <<'PY'
import json, sys
one = json.load(open(sys.argv[2])); floor = json.load(open(sys.argv[3])); fleet = json.load(open(sys.argv[4]))
print(f"| {sys.argv[1]} | {one['p50_ms']:.2f} | {one['p99_ms']:.2f} | {floor['p50_ms']:.3f} | {floor['p99_ms']:.3f} | {one['p50_ms']/floor['p50_ms']:.1f} | {fleet['last_promotion_ms']/1000:.2f} | {fleet['p50_ms']:.0f} / {fleet['p99_ms']:.0f} |")
PY
done
fi
echo
if want exec; then
# A router and one real XEM offering examples/tools; the workspace credential is a stand-in.
ROUNDS_EXEC="${ROUNDS_EXEC:-300}"
# Starts router $1 (database url $2) and an XEM enrolled with it, and waits until the XEM's
# tools are served; sets ADDR, KEY, XEM (pid) and XDIR. Both log at ${LOG_LEVEL:-warn}.
start_exec_pair() {
  start_router "$1" "$2"
  XDIR="$OUT/$1/xem"; rm -rf "$XDIR"; mkdir -p "$XDIR/credentials"
  printf 'apiVersion: v1\n' >"$XDIR/staged"; install -m 0600 "$XDIR/staged" "$XDIR/credentials/kubernetes-prod.yaml"
  local token
  token=$(./target/release/xeroctl --base-url "http://$ADDR" --api-key "$KEY" -o json agents join-keys --create --name "bench-xem" --ttl-seconds 300 --workspaces kubernetes-prod 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
  # Tools run as `nobody` (the bench runs as root); the XEM's tracing filter comes from
  # XEM_LOG_FILTER (its log_level takes level names only).
  XEM_LOG_FILTER="${LOG_LEVEL:-}" "${XEM_BIN:-./target/release/xerotier-xem}" --config /dev/null --router-url "http://$ADDR" --join-key "$token" --registration-name bench-xem \
    --state-dir "$XDIR/state" --curve-key-path "$XDIR/curve.hex" --signing-key-path "$XDIR/signing.hex" \
    --tools-dir "$PWD/examples/tools" --credentials-dir "$XDIR/credentials" --lease-renewal-interval-ms 1000 --log-level warn \
    --tool-user nobody --run-dir "$XDIR/run" >"$XDIR/xem.log" 2>&1 &
  XEM=$!; STARTED+=($XEM)
  for _ in $(seq 1 200); do curl -fsS -H "Authorization: Bearer $KEY" "http://$ADDR/v1/exec/tools" | grep -q noop && break; sleep 0.1; done
  sleep 1 # the first lease renewal and manifest are in
}
stop_exec_pair() { kill "$XEM"; wait "$XEM" 2>/dev/null || true; stop_router "$1"; }
rt() { ./target/release/xerotier-bench exec-round-trip --base-url "http://$ADDR" --api-key "$KEY" --executable "$PWD/examples/tools/noop/run.sh" --rounds "$ROUNDS_EXEC" "$@"; }

# The round trip: invocations alternate with direct runs of the same executable, in one process;
# the client waits on the output stream (as `xeroctl exec invoke --wait`), then, in a second
# series, by polling every millisecond.
echo "| backend | no-op via router + XEM p50 ms | p99 ms | same tool run directly p50 ms | p99 ms | p50 ratio | polling client p50 ms | direct p50 ms | p50 ratio |"
echo "|---|---|---|---|---|---|---|---|---|"
for backend in sqlite postgres; do
  url=""; [ "$backend" = postgres ] && url=$(fresh_pg exec)
  start_exec_pair "exec-$backend" "$url"
  rt >"$OUT/exec-rt-$backend.json"
  rt --wait poll >"$OUT/exec-rt-poll-$backend.json"
  ./target/release/xerotier-bench exec-under-reloads --base-url "http://$ADDR" --api-key "$KEY" --xem-pid "$XEM" --credential "$XDIR/credentials/kubernetes-prod.yaml" --reloads 100 --interval-ms 50 --concurrency 4 >"$OUT/exec-reload-$backend.json" 2>"$OUT/exec-reload-$backend.err"
  stop_exec_pair "exec-$backend"
  python3 - "$backend" "$OUT/exec-rt-$backend.json" "$OUT/exec-rt-poll-$backend.json" <<'PY'
import json, sys
rt = json.load(open(sys.argv[2])); po = json.load(open(sys.argv[3]))
d50, d99, p50 = rt['direct_p50_us'] / 1000, rt['direct_p99_us'] / 1000, po['direct_p50_us'] / 1000
print(f"| {sys.argv[1]} | {rt['p50_ms']:.2f} | {rt['p99_ms']:.2f} | {d50:.2f} | {d99:.2f} | **{rt['p50_ms']/d50:.2f}** | {po['p50_ms']:.2f} | {p50:.2f} | {po['p50_ms']/p50:.2f} |")
PY
done
echo
echo "| backend | credential reloads under load | invocations | failed |"
echo "|---|---|---|---|"
for backend in sqlite postgres; do
  python3 - "$backend" "$OUT/exec-reload-$backend.json" <<'PY'
import json, sys
rl = json.load(open(sys.argv[2]))
print(f"| {sys.argv[1]} | {rl['reloads']} | {rl['ops'] + rl['failed']} | {rl['failed']} |")
PY
done

# Where the time goes: the same round trip against a router and an XEM that mark each step of
# an invocation (their logs, target xerotier_timeline); each layer's p50 / p99 and its share
# of the direct run's p50 measured in the same series. A separate pair, so that the logging
# does not weigh on the figures above.
for backend in sqlite postgres; do
  url=""; [ "$backend" = postgres ] && url=$(fresh_pg layers)
  LOG_LEVEL="warn,xerotier_timeline=debug" start_exec_pair "layers-$backend" "$url"
  rt --timeline-log "$OUT/layers-$backend/router.log" --timeline-log "$XDIR/xem.log" >"$OUT/exec-layers-$backend.json"
  stop_exec_pair "layers-$backend"
  echo
  python3 - "$backend" "$OUT/exec-layers-$backend.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[2])); d50 = r['direct_p50_us']
print(f"| {sys.argv[1]}: layer (round trip p50 {r['p50_ms']:.2f} ms, direct run {d50/1000:.2f} ms) | p50 ms | p99 ms | p50 / direct run |")
print("|---|---|---|---|")
total = 0
for l in r['layers']:
    if not l['beside']:
        total += l['p50_us']
    print(f"| {l['layer']} | {l['p50_us']/1000:.3f} | {l['p99_us']/1000:.3f} | {l['p50_us']/d50:.2f} |")
print(f"| sum of the critical path's p50s | {total/1000:.3f} | | {total/d50:.2f} |")
PY
done
echo
echo "| credential files | reload p50 ms | p99 ms |"
echo "|---|---|---|"
./target/release/xerotier-bench credential-reload --files 100 --rounds 200 >"$OUT/reload-100.json"
python3 - "$OUT/reload-100.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"| 100 | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} |")
PY
fi
echo
if want isolation; then
# What each layer of tool isolation costs (needs root: tools run as `nobody`), the layers
# interleaved round by round; ratios against the plain spawn of the same run.
echo "| layer | p50 ms | p99 ms | p50 / direct |"
echo "|---|---|---|---|"
./target/release/xerotier-bench isolation-layers --executable "$PWD/examples/tools/noop/run.sh" --rounds "${ROUNDS_ISOLATION:-500}" >"$OUT/isolation.json"
python3 - "$OUT/isolation.json" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
direct = report["layers"][0]["p50_ms"]
for layer in report["layers"]:
    print(f"| {layer['layer']} | {layer['p50_ms']:.2f} | {layer['p99_ms']:.2f} | {layer['p50_ms']/direct:.2f} |")
print(f"(Landlock: {report['landlock']}; tool user: {report['tool_user']}; {report['rounds']} rounds)")
PY
fi
echo
if want fairness; then
# 100 honest simulated agents renew every 200 ms; FAIR_SECONDS without, then FAIR_SECONDS while
# one more enrolled agent sends hellos back to back. Same router, same run.
FAIR_SECONDS="${FAIR_SECONDS:-10}"
echo "| backend | honest agents | lease acks without flood p50 / p99 ms | with flood p50 / p99 ms | p99 ratio | flood hellos sent | renewals acknowledged (quiet / flood) |"
echo "|---|---|---|---|---|---|---|"
for backend in sqlite postgres; do
  url=""; [ "$backend" = postgres ] && url=$(fresh_pg fair)
  start_router "fair-$backend" "$url"
  ./target/release/xerotier-bench fairness --base-url "http://$ADDR" --api-key "$KEY" --count 100 --lease-ms 200 --seconds "$FAIR_SECONDS" >"$OUT/fair-$backend.json" 2>"$OUT/fair-$backend.err"
  stop_router "fair-$backend"
  python3 - "$backend" "$OUT/fair-$backend.json" <<'PY'
import json, sys
f = json.load(open(sys.argv[2]))
q50, q99 = f['quiet_p50_us'] / 1000, f['quiet_p99_us'] / 1000
print(f"| {sys.argv[1]} | {f['concurrency']} | {q50:.2f} / {q99:.2f} | {f['p50_ms']:.2f} / {f['p99_ms']:.2f} | {f['p99_ms'] / max(q99, 0.001):.2f} | {f['flood_hellos']} | {f['acked_quiet']}/{f['sent_quiet']} / {f['ops']}/{f['sent_flood']} |")
PY
done
fi
