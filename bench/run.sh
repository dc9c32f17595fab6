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
# Every router of the run seals its keys under one master key (replicas of one store must share
# it). A router build from before sealed secrets (ROUTER_BIN of an older build) takes none.
MASTER_KEY_ARGS=()
if "${ROUTER_BIN:-./target/release/xerotier-router}" --help | grep -q -- --master-key-file; then
  mkdir -p "$OUT"
  [ -s "$OUT/master.key" ] || "${ROUTER_BIN:-./target/release/xerotier-router}" new-master-key "$OUT/master.key" >/dev/null
  MASTER_KEY_ARGS=(--master-key-file "$OUT/master.key")
fi

start_router() { # $1 = name, $2 = database url or "", $3 = "tls" for HTTPS (default: plain HTTP)
  local dir="$OUT/$1"; mkdir -p "$dir"
  # A fresh store (PostgreSQL gets a fresh database from fresh_pg): a previous run's agents would
  # hold the registration names, and its address must not pass for this router's.
  rm -rf "$dir/state"
  local db=(); [ -n "$2" ] && db=(--database-url "$2")
  local http=(--insecure-http); [ "${3:-}" = tls ] && http=()
  "${ROUTER_BIN:-./target/release/xerotier-router}" --state-dir "$dir/state" "${http[@]}" --listen 127.0.0.1:0 --mesh-bind tcp://127.0.0.1:0 --log-level "${LOG_LEVEL:-warn}" "${MASTER_KEY_ARGS[@]}" "${db[@]}" >"$dir/router.log" 2>&1 &
  echo $! >"$dir/pid"; STARTED+=($!)
  for _ in $(seq 1 200); do [ -s "$dir/state/http.addr" ] && break; sleep 0.05; done
  # A replica on an already bootstrapped database writes no bootstrap key: KEY stays the first's.
  ADDR=$(cat "$dir/state/http.addr"); KEY=$(cat "$dir/state/bootstrap.key" 2>/dev/null || echo "${KEY:-}")
}
router_pid() { cat "$OUT/$1/pid"; }
cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
stop_router() { kill "$(cat "$OUT/$1/pid")"; wait "$(cat "$OUT/$1/pid")" 2>/dev/null || true; }
rps() { awk '/Requests\/sec/ {print $2}' "$1"; }
SECTIONS="${SECTIONS:-http tls keys enroll fleet rotation oprotation mkrotation exec isolation fairness fanout order replicas revoke xrotation posture}"
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
if want oprotation; then
# Emergency rotation of $AGENTS simulated agents as one fleet operation (issue 13): waves of
# $WAVE_SIZE, request → operation `completed`, against the 15-minute window.
WAVE_SIZE="${WAVE_SIZE:-100}"
echo "| backend | agents | wave size | waves | time to completed (s) | window (s) | succeeded | failed |"
echo "|---|---|---|---|---|---|---|---|"
for backend in sqlite postgres; do
  url=""; [ "$backend" = postgres ] && url=$(fresh_pg oprotate)
  start_router "oprotate-$backend" "$url"
  ./target/release/xerotier-bench fleet-operation --base-url "http://$ADDR" --api-key "$KEY" --agents "$AGENTS" --wave-size "$WAVE_SIZE" >"$OUT/oprotate-$backend.json" 2>"$OUT/oprotate-$backend.err"
  stop_router "oprotate-$backend"
  python3 - "$backend" "$OUT/oprotate-$backend.json" <<'PY'
import json, sys, math
r = json.load(open(sys.argv[2]))
waves = math.ceil(r['agents'] / r['wave_size'])
print(f"| {sys.argv[1]} | {r['agents']} | {r['wave_size']} | {waves} | {r['completion_ms']/1000:.1f} | {r['window_ms']/1000:.0f} | {r['succeeded']} | {r['failed']} |")
PY
done
fi
echo
if want mkrotation; then
# A rotation of the router's mesh key (issue 14) across $AGENTS connected simulated agents, each
# answering like the XEM (the set saved and acknowledged; when the update_servers rekey ends its
# session it reconnects on the router's preferred key at once, and a connection silent for 3
# lease intervals moves to the next key held). Phases as
# `xeroctl router rotate-keys --kind mesh --auto` walks them, each waited for through the router's
# progress; the baseline is the same agents connecting at first, same router, same run.
echo "| backend | agents | baseline: all connect (s) | init (ms) | update_clients → all acknowledged (s) | update_servers → all on the new key (s) | standby (ms) | total: init → all on the new key (s) | total / baseline | moved | reconnect p50 / p99 (ms) | missed the update_servers set (retried the old key) |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
rm -f "$OUT/mkrotate-notes.txt"
for backend in sqlite postgres; do
  url=""; [ "$backend" = postgres ] && url=$(fresh_pg mkrotate)
  start_router "mkrotate-$backend" "$url"
  ./target/release/xerotier-bench mesh-rotation --base-url "http://$ADDR" --api-key "$KEY" --agents "$AGENTS" >"$OUT/mkrotate-$backend.json" 2>"$OUT/mkrotate-$backend.err"
  stop_router "mkrotate-$backend"
  python3 - "$backend" "$OUT/mkrotate-$backend.json" "$OUT/mkrotate-notes.txt" <<'PY'
import json, sys
r = json.load(open(sys.argv[2]))
print(f"| {sys.argv[1]} | {r['agents']} | {r['baseline_connect_ms']/1000:.2f} | {r['init_ms']} | {r['update_clients_ms']/1000:.2f} | {r['update_servers_ms']/1000:.2f} | {r['standby_ms']} | {r['total_ms']/1000:.2f} | {r['total_over_baseline']:.1f} | {r['moved']} | {r['p50_ms']:.0f} / {r['p99_ms']:.0f} | {r['agents'] - r['got_update_servers_set']} ({r['old_key_reconnects']}) |")
if r['startup_reconnects'] or r['exhausted_rounds']:
    with open(sys.argv[3], "a") as notes:
        notes.write(f"({sys.argv[1]}: {r['startup_reconnects']} silent connections replaced while the fleet first connected; {r['exhausted_rounds']} rounds through every key held without a handshake)\n")
PY
done
cat "$OUT/mkrotate-notes.txt" 2>/dev/null || true
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
# ---------------------------------------------------------------------------------------------
# Several replicas on one PostgreSQL (issue 12): sections `replicas`, `revoke`, `xrotation`.
# Each starts N routers on one fresh database, each with its own state dir; only the first
# bootstraps (its bootstrap.key is everyone's admin key).
start_replica() { # $1 = name, $2 = database url, more = extra router arguments; sets ADDR
  local dir="$OUT/$1" name="$1" url="$2"; shift 2; mkdir -p "$dir"; rm -rf "$dir/state"
  "${ROUTER_BIN:-./target/release/xerotier-router}" --state-dir "$dir/state" --insecure-http --listen 127.0.0.1:0 --mesh-bind tcp://127.0.0.1:0 \
    --log-level "${LOG_LEVEL:-warn}" "${MASTER_KEY_ARGS[@]}" --database-url "$url" "$@" >"$dir/router.log" 2>&1 &
  echo $! >"$dir/pid"; STARTED+=($!)
  for _ in $(seq 1 200); do [ -s "$dir/state/http.addr" ] && break; sleep 0.05; done
  ADDR=$(cat "$dir/state/http.addr")
  for _ in $(seq 1 100); do curl -fsS "http://$ADDR/healthz" >/dev/null 2>&1 && break; sleep 0.05; done
}
# Starts $2 replicas named $1-1 … $1-N on database $3 (more = extra router arguments); sets
# ADDRS (one per replica) and KEY (the first's bootstrap key).
start_replicas() {
  local prefix="$1" n="$2" url="$3"; shift 3; ADDRS=()
  for i in $(seq 1 "$n"); do start_replica "$prefix-$i" "$url" "$@"; ADDRS+=("$ADDR"); done
  KEY=$(cat "$OUT/$prefix-1/state/bootstrap.key")
}
stop_replicas() { for i in $(seq 1 "$2"); do stop_router "$1-$i"; done; }

if want replicas; then
# Authenticated GET /v1/exec/tools against /healthz on 1, 2 and 3 replicas: one wrk per replica,
# all at once, 32 connections in all; the sums of the replicas' req/s, ROUNDS alternating rounds.
# A replica that misses its lease renewals (CPU starved) fences itself and answers 503
# replica_fenced: such answers are not counted as served (req/s of 2xx only), they are reported.
ok_rps() { awk '/requests in/ {n=$1; s=$4; sub(/s,?$/, "", s)} /Non-2xx/ {bad=$5} END {printf "%.2f", (n - bad) / s}' "$1"; }
non2xx() { awk '/Non-2xx/ {bad=$5} END {print bad + 0}' "$1"; }
echo "| replicas | /healthz req/s (sum) | GET /v1/exec/tools req/s (sum, 2xx, authenticated) | ratio | tools req/s per replica | non-2xx (fenced) answers | fences logged |"
echo "|---|---|---|---|---|---|---|"
for n in 1 2 3; do
  url=$(fresh_pg "replicas$n")
  start_replicas "replicas$n" "$n" "$url"
  conns=$(( (32 + n - 1) / n )); d="$OUT/replicas$n-1"
  for addr in "${ADDRS[@]}"; do curl -fsS -H "Authorization: Bearer $KEY" "http://$addr/v1/exec/tools" >/dev/null; done
  h_sum=0; t_sum=0; per=(); bad=0
  for r in $(seq 1 "$ROUNDS"); do
    for kind in healthz tools; do
      pids=()
      for i in $(seq 1 "$n"); do
        addr=${ADDRS[$((i - 1))]}
        if [ "$kind" = healthz ]; then wrk -t1 -c"$conns" -d"${SECONDS_PER_RUN}s" "http://$addr/healthz" >"$d/healthz-$r-$i.txt" &
        else wrk -t1 -c"$conns" -d"${SECONDS_PER_RUN}s" -H "Authorization: Bearer $KEY" "http://$addr/v1/exec/tools" >"$d/tools-$r-$i.txt" & fi
        pids+=($!)
      done
      wait "${pids[@]}"
    done
    for i in $(seq 1 "$n"); do
      bad=$((bad + $(non2xx "$d/tools-$r-$i.txt") + $(non2xx "$d/healthz-$r-$i.txt")))
      h_sum=$(echo "$h_sum + $(ok_rps "$d/healthz-$r-$i.txt")" | bc -l)
      t_sum=$(echo "$t_sum + $(ok_rps "$d/tools-$r-$i.txt")" | bc -l)
      per[$i]=$(echo "${per[$i]:-0} + $(ok_rps "$d/tools-$r-$i.txt")" | bc -l)
    done
  done
  stop_replicas "replicas$n" "$n"
  fences=$(cat "$OUT"/replicas"$n"-*/router.log | grep -c "replica FENCED" || true)
  per_text=""; for i in $(seq 1 "$n"); do per_text+="$(printf "%.0f" "$(echo "${per[$i]}/$ROUNDS" | bc -l)") "; done
  printf "| %s | %.0f | %.0f | %.2f | %s| %s | %s |\n" "$n" "$(echo "$h_sum/$ROUNDS" | bc -l)" "$(echo "$t_sum/$ROUNDS" | bc -l)" "$(echo "$t_sum/$h_sum" | bc -l)" "$per_text" "$bad" "$fences"
done
fi
echo
if want revoke; then
# Revoke latency across 3 replicas: a key created on A and cached on B and C, revoked through A
# while B and C are probed with it every millisecond; after the return both must refuse it.
# The failed-authentication limiter is opened wide: the probes' refusals are the point.
ROUNDS_REVOKE="${ROUNDS_REVOKE:-300}"
url=$(fresh_pg revoke)
# REVOKE_PROFILE=1: PostgreSQL logs every statement of this database with its duration (and
# timestamps), summarised below the table: where a revoke's time goes. Costs some latency itself.
if [ "${REVOKE_PROFILE:-}" = 1 ]; then
  psql -q "$PG_ADMIN" -c "ALTER DATABASE ${url##*/} SET log_min_duration_statement = 0" -c "ALTER SYSTEM SET log_line_prefix = '%m [%p] %d '" -c "SELECT pg_reload_conf()" >/dev/null
  pg_log="${XEROTIER_TEST_PG_DIR:-/tmp/xerotier-pg}/log"; pg_log_from=$(stat -c %s "$pg_log")
fi
start_replicas revoke 3 "$url" --auth-failure-burst 1000000 --auth-failures-per-minute 1000000
./target/release/xerotier-bench revoke-replicas --url "http://${ADDRS[0]}" --url "http://${ADDRS[1]}" --url "http://${ADDRS[2]}" --api-key "$KEY" --rounds "$ROUNDS_REVOKE" >"$OUT/revoke.json" 2>"$OUT/revoke.err"
stop_replicas revoke 3
echo "| replicas | rounds | revoke on A returns p50 ms | p99 ms | max ms | call → refused on B and C p50 ms | p99 ms | max ms | accepted after return |"
echo "|---|---|---|---|---|---|---|---|---|"
python3 - "$OUT/revoke.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
bad = r['accepted_after_return'] + r['not_refused_after_return']
print(f"| {r['replicas']} | {r['rounds']} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['revoke_max_ms']:.2f} | {r['refused_everywhere_p50_ms']:.2f} | {r['refused_everywhere_p99_ms']:.2f} | {r['refused_everywhere_max_ms']:.2f} | {bad} |")
for p in r['per_replica']:
    print(f"(first refusal on {p['replica']}: p50 {p['first_refusal_p50_ms']:.2f} ms, p99 {p['first_refusal_p99_ms']:.2f} ms, max {p['first_refusal_max_ms']:.2f} ms)")
if r['never_refused']:
    print(f"(probes that saw no refusal within 5 s: {r['never_refused']})")
PY
if [ "${REVOKE_PROFILE:-}" = 1 ]; then
  tail -c +"$((pg_log_from + 1))" "$pg_log" >"$OUT/revoke-pg.log"
  psql -q "$PG_ADMIN" -c "ALTER SYSTEM RESET log_line_prefix" -c "SELECT pg_reload_conf()" >/dev/null
  echo; echo "| statement (PostgreSQL's own duration, all replicas, whole run) | count | p50 ms | p99 ms | max ms |"
  echo "|---|---|---|---|---|"
  python3 - "$OUT/revoke-pg.log" "${url##*/}" <<'PY'
import re, sys
kinds = [("COMMIT (the revoke's, and other transactions')", r"^COMMIT"),
         ("acknowledgement (UPDATE router_replicas … pg_notify, autocommit)", r"WITH acked AS"),
         ("lease renewal", r"UPDATE router_replicas SET heartbeat_at"),
         ("replicas_behind (the waiter's check)", r"SELECT id FROM router_replicas WHERE stopped_at IS NULL"),
         ("latest_signal_seq", r"sequence_counters WHERE name = 'signals'"),
         ("signals_after (the applier's catch-up)", r"FROM replica_signals WHERE seq >")]
got = {k: [] for k, _ in kinds}
entries = []
for line in open(sys.argv[1], errors="replace"):
    if line[:1].isspace() and entries:  # a statement's continuation lines
        entries[-1] += " " + line.strip()
    else:
        entries.append(line.rstrip())
for line in entries:
    if f" {sys.argv[2]} " not in line:
        continue
    m = re.search(r"duration: ([0-9.]+) ms +(?:statement|execute [^:]*): (.*)", line)
    if not m:
        continue
    for k, pat in kinds:
        if re.search(pat, m.group(2)):
            got[k].append(float(m.group(1)))
            break
for k, _ in kinds:
    v = sorted(got[k])
    if not v:
        continue
    pct = lambda p: v[min(len(v) - 1, max(0, int(len(v) * p + 0.999999) - 1))]
    print(f"| {k} | {len(v)} | {pct(0.5):.2f} | {pct(0.99):.2f} | {v[-1]:.2f} |")
PY
  # Per revoke: its commit, the three replicas' acknowledgements, the waiter's last check.
  python3 - "$OUT/revoke-pg.log" "${url##*/}" <<'PY'
import re, sys
from datetime import datetime
db = sys.argv[2]
entries = []
for line in open(sys.argv[1], errors="replace"):
    if line[:1].isspace() and entries:
        entries[-1] += " " + line.strip()
    else:
        entries.append(line.rstrip())
ev = []
for e in entries:
    if f" {db} " not in e: continue
    m = re.match(r"(\S+ \S+) UTC \[(\d+)\] \S+ LOG:  duration: ([0-9.]+) ms  (statement|execute [^:]*): (.*)", e)
    if not m: continue
    t = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f").timestamp()*1000
    ev.append((t, int(m.group(2)), float(m.group(3)), m.group(5)))
res = []
for i,(t,pid,d,s) in enumerate(ev):
    if "revoked_at" in s and s.startswith("UPDATE api_keys"):
        # commit of this pid
        c = next(((t2,d2) for (t2,p2,d2,s2) in ev[i+1:] if p2==pid and s2.startswith("COMMIT")), None)
        if not c: continue
        t1 = c[0]
        later = [x for x in ev[i+1:] if x[0] >= t1 - 0.0001]
        acks = [x for x in later if x[3].startswith("WITH acked")][:3]
        nxt = next((x for x in later if "INSERT INTO api_keys" in x[3]), None)
        rb = [x for x in later if x[3].startswith("SELECT id FROM router_replicas WHERE stopped_at IS NULL") and (nxt is None or x[0] < nxt[0])]
        if len(acks) < 3 or not rb: continue
        res.append((t - d, c[1], acks[-1][0]-t1, rb[-1][0]-acks[-1][0], len(rb), rb[-1][0] - (t-d)))
def pct(v,p):
    v=sorted(v); return v[min(len(v)-1,max(0,int(len(v)*p+0.999999)-1))]
print(f"\n| one revoke, from PostgreSQL's log ({len(res)} revokes; log timestamps in ms) | p50 ms | p99 ms | max ms |")
print("|---|---|---|---|")
for name, k in (("revoke COMMIT duration (fsync)",1),("commit end -> 3rd ack executed",2),("3rd ack -> waiter's last replicas_behind done",3),("replicas_behind calls per revoke (count)",4),("revoke UPDATE start -> last replicas_behind done",5)):
    v=[r[k] for r in res]; print(f"| {name} | {pct(v,.5):.2f} | {pct(v,.99):.2f} | {max(v):.2f} |")
PY
fi
fi
echo
if want xrotation; then
# Cross-replica rotation: one simulated agent enrolled through C with its mesh session on C;
# ROUNDS_ROT rotations requested through C itself (the baseline), then through A. Request →
# the agent receiving its promotion (agent side), and request → `rotation_completed` (the old
# key retired; the event's time, millisecond resolution).
ROUNDS_ROT="${ROUNDS_ROT:-200}"
# Baseline: one router alone on its database, same rounds.
url=$(fresh_pg xrotate1)
start_replicas xrotate1 1 "$url"
./target/release/xerotier-bench rotate --base-url "http://${ADDRS[0]}" --api-key "$KEY" --agents 1 --rounds "$ROUNDS_ROT" >"$OUT/xrotate-alone.json" 2>"$OUT/xrotate-alone.err"
stop_replicas xrotate1 1
url=$(fresh_pg xrotate)
start_replicas xrotate 3 "$url"
A="http://${ADDRS[0]}"; C="http://${ADDRS[2]}"
./target/release/xerotier-bench rotate-floor --base-url "$C" --api-key "$KEY" --rounds "$ROUNDS_ROT" >"$OUT/xrotate-floor.json"
./target/release/xerotier-bench rotate --base-url "$C" --api-key "$KEY" --agents 1 --rounds "$ROUNDS_ROT" >"$OUT/xrotate-same.json" 2>"$OUT/xrotate-same.err"
./target/release/xerotier-bench rotate --base-url "$C" --request-url "$A" --api-key "$KEY" --agents 1 --rounds "$ROUNDS_ROT" >"$OUT/xrotate-cross.json" 2>"$OUT/xrotate-cross.err"
stop_replicas xrotate 3
echo "| rotation requested through | session on | promoted p50 ms | p99 ms | old key retired p50 ms | p99 ms | promoted p50 / floor p50 | promoted, old key not retired within 5 s (the run stops at the first) |"
echo "|---|---|---|---|---|---|---|---|"
python3 - "$OUT/xrotate-same.json" "$OUT/xrotate-cross.json" "$OUT/xrotate-floor.json" "$OUT/xrotate-alone.json" <<'PY'
import json, sys
floor = json.load(open(sys.argv[3]))
for label, on, path in (("one router alone (no replicas)", "the same router", sys.argv[4]), ("C (same replica)", "C", sys.argv[1]), ("A (another replica)", "C", sys.argv[2])):
    r = json.load(open(path))
    print(f"| {label} | {on} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['completed_p50_ms']} | {r['completed_p99_ms']} | {r['p50_ms']/floor['p50_ms']:.1f} | {r['not_retired']} of {r['rounds_done']} (of {r['rounds']} asked) |")
print(f"(floor on C, mesh round trip + crypto: p50 {floor['p50_ms']:.3f} ms, p99 {floor['p99_ms']:.3f} ms)")
PY
fi
echo
if want fleet10k; then
# 10,000 simulated agents spread over 3 replicas on one PostgreSQL (issue 12). Long (15-20
# minutes on the 2-core machine, the rotation bounded by the 15-minute window), so not in the
# default SECTIONS: `SECTIONS=fleet10k bench/run.sh`.
# `xerotier-bench fleet-replicas`: agents enrolled round-robin through the replicas (retried
# with backoff while one answers 503), each holding its CURVE session with the replica it
# enrolled with; every lease renewal sent for FLEET10K_SECONDS counted against its
# acknowledgement, per replica; each replica's VmRSS idle → after enrollment → connected →
# loaded → after the rotation; then one `curve_rotate` operation over all of them (requested
# through the first replica), request → `completed`. FLEET10K_AGENTS (10000), FLEET10K_REPLICAS
# (3), FLEET10K_LEASE_MS (10000, the XEM's default interval), FLEET10K_SECONDS (60),
# FLEET10K_WAVE_SIZE (500, the router's maximum), FLEET10K_PROCESSES (worker processes holding
# the agents, 8), FLEET10K_DRIVERS (threads driving the agents per worker, 2),
# FLEET10K_CONNECT_RATE (agents connected per second, 1000).
# Every agent holds a TCP connection and three ZeroMQ sockets (four descriptors) in its worker,
# and a session in its replica: the descriptor limit is raised as far as the hard limit allows
# before the replicas start (they inherit it); with a hard limit of 20,000, one process holds
# at most about 4,900 agents, hence the workers (8: room for the sockets a reconnect storm opens
# before the old ones are closed). A reconnect that finds its ZeroMQ context full (EMFILE) is
# put off to the agent's next lease tick and counted, instead of ending its driver thread
# (which silenced ~600 agents in runs 4 to 7).
ulimit -n 1048576 2>/dev/null || ulimit -n "$(ulimit -Hn)"
F10K_N="${FLEET10K_REPLICAS:-3}"
url=$(fresh_pg fleet10k)
start_replicas fleet10k "$F10K_N" "$url"
f10k_args=()
for i in $(seq 1 "$F10K_N"); do f10k_args+=(--base-url "http://${ADDRS[$((i - 1))]}" --pid "$(router_pid "fleet10k-$i")"); done
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg); open files limit $(ulimit -n)" >"$OUT/fleet10k.load"
./target/release/xerotier-bench fleet-replicas "${f10k_args[@]}" --api-key "$KEY" \
  --agents "${FLEET10K_AGENTS:-10000}" --lease-ms "${FLEET10K_LEASE_MS:-10000}" --seconds "${FLEET10K_SECONDS:-60}" \
  --wave-size "${FLEET10K_WAVE_SIZE:-500}" --processes "${FLEET10K_PROCESSES:-8}" --drivers "${FLEET10K_DRIVERS:-2}" --connect-per-second "${FLEET10K_CONNECT_RATE:-1000}" \
  --clk-tck "$(getconf CLK_TCK)" >"$OUT/fleet10k.json" 2>"$OUT/fleet10k.err" || { tail -20 "$OUT/fleet10k.err" >&2; exit 1; }
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/fleet10k.load"
stop_replicas fleet10k "$F10K_N"
f10k_fences=$(cat "$OUT"/fleet10k-*/router.log | grep -c "replica FENCED" || true)
python3 - "$OUT/fleet10k.json" "$f10k_fences" <<'PY'
import json, math, sys
r = json.load(open(sys.argv[1])); mib = lambda k: k / 1024
print(f"| replica | agents | renewals sent | acknowledged | not queued | ack p50 / p99 ms (all) | RSS idle → enrolled → connected → loaded → after rotation (MiB) | MiB per agent (loaded − idle) | CPU while renewing (% of one core) | enroll retries (503) | promoted |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for i, p in enumerate(r['per_replica']):
    rss = " → ".join(f"{mib(p[k]):.0f}" for k in ('rss_idle_kib', 'rss_enrolled_kib', 'rss_connected_kib', 'rss_loaded_kib', 'rss_rotated_kib'))
    print(f"| {chr(65 + i)} | {p['agents']} | {p['sent']['renewing']} | {p['acked']['renewing']} | {p['unsent']['renewing']} | | {rss} | {p['mib_per_agent_loaded']:.4f} | {p['cpu_pct_renewing']:.1f} | {p['enroll_retries']} | {p['promotions']} |")
print(f"| all | {r['enrolled']} of {r['agents']} | {r['sent']} | {r['acked']} | {r['unsent']} | {r['p50_ms']:.1f} / {r['p99_ms']:.1f} | | | | | {r['promoted']} |")
op = r['operation']; waves = math.ceil(r['enrolled'] / r['wave_size'])
print()
print("| agents | replicas | wave size | waves | operation status | time to completed (s) | succeeded | failed | skipped | promoted (agents' side) | last promotion (s) | all renewing on the new key (s) | renewals during the rotation sent / acknowledged |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
print(f"| {r['enrolled']} | {r['replicas']} | {r['wave_size']} | {waves} | {op.get('status')} | {r['completion_ms']/1000:.1f} | {op.get('succeeded')} | {op.get('failed')} | {op.get('skipped')} | {r['promoted']} | {r['last_promotion_ms']/1000:.1f} | {r['all_on_new_key_ms']/1000:.1f} ({r['on_new_key']} agents) | {r['sent_rotating']} / {r['acked_rotating']} |")
print(f"(lease {r['lease_ms']} ms, renewals counted for {r['renewing_ms']/1000:.1f} s; enrollment {r['enroll_ms']/1000:.1f} s; "
      f"{r['connected']} agents acknowledged {r['connect_ms']/1000:.1f} s after the first connect; sessions per replica as they report them: "
      f"{', '.join(str(x.get('sessions')) for x in r['sessions_reported']) if isinstance(r['sessions_reported'], list) else r['sessions_reported']}; "
      f"silent reconnects {r['silent_reconnects']} (put off for want of sockets {r.get('deferred_reconnects', 0)}), rotation failures heard {r['rotation_failed_frames']}, simulator errors {r['simulator_errors']}; "
      f"fences logged {sys.argv[2]}; bench process RSS {mib(r['bench_rss_kib']):.0f} MiB and {r['bench_cpu_pct_renewing']:.0f}% of one core while renewing, {r['processes']} worker processes, {r['drivers']} driver threads in all)")
if r['first_problem'] or r['first_enroll_error']:
    print(f"(first problem: {r['first_problem']}; first enrollment error: {r['first_enroll_error']})")
PY
cat "$OUT/fleet10k.load"
fi
# ---------------------------------------------------------------------------------------------
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
echo
if want fanout; then
# Event fan-out across replicas (PostgreSQL): two routers on one database; FANOUT_ROUNDS events
# (pauses and resumes of one agent) committed through A, each awaited on a live events stream
# held on B, which the commit's NOTIFY wakes. One event in flight at a time.
echo "| replicas | events | write answered → delivered on the other replica p50 ms | p99 ms | write sent → delivered p50 ms | p99 ms |"
echo "|---|---|---|---|---|---|"
url=$(fresh_pg fanout)
start_router fanout-a "$url"; A_ADDR=$ADDR
start_router fanout-b "$url"; B_ADDR=$ADDR
./target/release/xerotier-bench event-fan-out --write-url "http://$A_ADDR" --read-url "http://$B_ADDR" --api-key "$KEY" --rounds "${FANOUT_ROUNDS:-1000}" >"$OUT/fanout.json"
stop_router fanout-b
stop_router fanout-a
python3 - "$OUT/fanout.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"| 2 (PostgreSQL) | {r['ops']} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['request_p50_ms']:.2f} | {r['request_p99_ms']:.2f} |")
PY
fi
echo
if want order; then
# What numbering audit records costs an invocation's creation (the hot path) on PostgreSQL:
# the creating statement (bench/order/*.sql) under pgbench, 16 clients, on three databases
# migrated by this build's router: as of migration 10 (the `seq` columns dropped again), as
# built (late numbering: `seq` NULL, `insert_order` from a sequence), and with a counter row
# (the alternative). Rounds alternate between them.
echo "| audit record order | invocation creations/s (16 clients) | mean latency ms |"
echo "|---|---|---|"
for v in v10 late counter; do
  url=$(fresh_pg "order_$v")
  start_router "order-$v" "$url"; stop_router "order-$v"
done
psql -q "$PG_BASE/bench_order_v10_$$" -c "ALTER TABLE audit_log DROP COLUMN seq, DROP COLUMN insert_order"
# The counter starts above what the router numbered already (its bootstrap's records).
psql -q "$PG_BASE/bench_order_counter_$$" -c "INSERT INTO sequence_counters SELECT 'audit', COALESCE(MAX(seq), 0) FROM audit_log"
for r in $(seq 1 "$ROUNDS"); do
  for v in v10 late counter; do
    f=bench/order/invocation_create.sql; [ "$v" = counter ] && f=bench/order/invocation_create_counter_row.sql
    pgbench -n -M simple -c 16 -j 2 -T "$SECONDS_PER_RUN" -f "$f" "$PG_BASE/bench_order_${v}_$$" >"$OUT/order-$v-$r.txt" 2>&1
  done
done
for v in v10 late counter; do
  tps=$(cat "$OUT"/order-$v-*.txt | awk '/^tps/ {s+=$3; n++} END {printf "%.0f", s/n}')
  lat=$(cat "$OUT"/order-$v-*.txt | awk '/latency average/ {s+=$4; n++} END {printf "%.1f", s/n}')
  case $v in v10) label="none (as of migration 10)";; late) label="late numbering (as built)";; counter) label="counter row locked to the commit";; esac
  echo "| $label | $tps | $lat |"
done
fi

# Posture report latency for 10,000 credentials on both backends (bench/posture.sh), each a
# ratio against /healthz and a 100-row page measured on the same router in the same run.
if want posture; then
echo
for backend in sqlite postgres; do
  url=""; [ "$backend" = postgres ] && url=$(fresh_pg posture)
  ROUTER_BIN="${ROUTER_BIN:-./target/release/xerotier-router}" DATABASE_URL="$url" bench/posture.sh
done
fi
