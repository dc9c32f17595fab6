#!/usr/bin/env bash
# Starts a local router (embedded SQLite store) and one enrolled XEM agent, state in
# .xerotier-local/, and prints what to do next. Ctrl-C stops both; running it again keeps the
# state (the XEM reconnects with its stored identity, no new join key needed).
#
# `--replicas N` (2-9) starts N router replicas on one local PostgreSQL instead (HTTPS on
# consecutive ports from 8080, mesh from 5555, one CA shared by all), state in
# .xerotier-local-replicas/ and the database in /tmp/xerotier-quickstart-pg (port 55440).
set -euo pipefail
cd "$(dirname "$0")/.."
REPLICAS=1
while [ $# -gt 0 ]; do
  case "$1" in
    --replicas) REPLICAS="${2:-}"; shift 2 || { echo "--replicas needs a number" >&2; exit 2; } ;;
    --replicas=*) REPLICAS="${1#*=}"; shift ;;
    -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$REPLICAS" in
  [1-9]) ;;
  *) echo "--replicas takes 1 to 9, not ${REPLICAS@Q}" >&2; exit 2 ;;
esac
scripts/install-deps.sh
cargo build --release --bins
BIN="$PWD/target/release"
ROOT="$PWD/.xerotier-local"
[ "$REPLICAS" -gt 1 ] && ROOT="$PWD/.xerotier-local-replicas"
mkdir -p "$ROOT/xem"
LISTEN="${XEROTIER_QUICKSTART_LISTEN:-127.0.0.1:8080}"
MESH="${XEROTIER_QUICKSTART_MESH:-tcp://127.0.0.1:5555}"
PIDS=()
DB_ARGS=()
PG_BIN=""
PG_DIR="${XEROTIER_QUICKSTART_PG_DIR:-/tmp/xerotier-quickstart-pg}"
PG_PORT="${XEROTIER_QUICKSTART_PG_PORT:-55440}"
as_postgres() { if [ "$(id -u)" = 0 ]; then su postgres -s /bin/bash -c "$*"; else bash -c "$*"; fi; }
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true
  if [ -n "$PG_BIN" ]; then as_postgres "$PG_BIN/pg_ctl -D $PG_DIR/d -m fast stop" >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT INT TERM

wait_for() { # $1 = description, $2.. = command that succeeds when ready
  local what=$1; shift
  for _ in $(seq 1 150); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "timed out waiting for $what" >&2; return 1
}

if [ "$REPLICAS" -gt 1 ]; then
  # One PostgreSQL every replica shares (kept between runs, like the SQLite file would be).
  for d in /usr/lib/postgresql/*/bin; do [ -x "$d/pg_ctl" ] && PG_BIN="$d"; done
  if [ -z "$PG_BIN" ]; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q postgresql >&2
    for d in /usr/lib/postgresql/*/bin; do [ -x "$d/pg_ctl" ] && PG_BIN="$d"; done
  fi
  if [ ! -d "$PG_DIR/d" ]; then
    mkdir -p "$PG_DIR"; [ "$(id -u)" = 0 ] && chown postgres "$PG_DIR"
    as_postgres "$PG_BIN/initdb -D $PG_DIR/d -A trust -U postgres" >/dev/null
  fi
  if ! as_postgres "$PG_BIN/pg_ctl -D $PG_DIR/d status" >/dev/null 2>&1; then
    as_postgres "$PG_BIN/pg_ctl -D $PG_DIR/d -l $PG_DIR/log -w -o '-p $PG_PORT -k /tmp -c listen_addresses=127.0.0.1' start" >/dev/null
  fi
  as_postgres "$PG_BIN/psql -h 127.0.0.1 -p $PG_PORT -U postgres -tAc \"SELECT 1 FROM pg_database WHERE datname = 'xerotier'\"" | grep -q 1 ||
    as_postgres "$PG_BIN/psql -h 127.0.0.1 -p $PG_PORT -U postgres -qc 'CREATE DATABASE xerotier'"
  DB_ARGS=(--database-url "postgres://postgres@127.0.0.1:$PG_PORT/xerotier")
fi

# The master key the router seals its own keys under in the store (0600, made once, kept
# beside the state; every replica is given the same one). A store copied without it is no
# use to anyone; lose it and the router's keys are lost with it.
MASTER_KEY="$ROOT/master.key"
[ -s "$MASTER_KEY" ] || "$BIN/xerotier-router" new-master-key "$MASTER_KEY" >/dev/null

"$BIN/xerotier-router" --state-dir "$ROOT/router" --listen "$LISTEN" --mesh-bind "$MESH" \
  --master-key-file "$MASTER_KEY" ${DB_ARGS[@]+"${DB_ARGS[@]}"} >"$ROOT/router.log" 2>&1 &
PIDS+=($!)
wait_for "the router" test -s "$ROOT/router/http.addr" || { cat "$ROOT/router.log" >&2; exit 1; }
ADDR=$(cat "$ROOT/router/http.addr")
# The router serves HTTPS with a CA of its own (created on first start and kept sealed in its
# store; the state dir holds its public certificate, tls/ca.pem, for clients).
CA="$ROOT/router/tls/ca.pem"
wait_for "the router's health check" curl -fsS --cacert "$CA" "https://$ADDR/healthz"
REPLICA_LINES=""
for i in $(seq 2 "$REPLICAS"); do
  # Every replica issues its certificate from the CA in the shared store, so clients, and a
  # load balancer in front, trust one CA whichever replica answers.
  dir="$ROOT/router-$i"
  mkdir -p "$dir" && chmod 0700 "$dir"
  listen="${LISTEN%:*}:$(( ${LISTEN##*:} + i - 1 ))"
  mesh="${MESH%:*}:$(( ${MESH##*:} + i - 1 ))"
  rm -f "$dir/http.addr"
  "$BIN/xerotier-router" --state-dir "$dir" --listen "$listen" --mesh-bind "$mesh" \
    --master-key-file "$MASTER_KEY" "${DB_ARGS[@]}" >"$ROOT/router-$i.log" 2>&1 &
  PIDS+=($!)
  wait_for "replica $i" test -s "$dir/http.addr" || { cat "$ROOT/router-$i.log" >&2; exit 1; }
  wait_for "replica $i's health check" curl -fsS --cacert "$CA" "https://$(cat "$dir/http.addr")/healthz"
  REPLICA_LINES+="  replica $i https://$(cat "$dir/http.addr")  mesh $(cat "$dir/mesh.addr")   (pid $!, log: $ROOT/router-$i.log)"$'\n'
done
export XEROCTL_BASE_URL="https://$ADDR" XEROCTL_CA_FILE="$CA"
CA_PIN=$(python3 -c 'import hashlib,ssl,sys; print("sha256:"+hashlib.sha256(ssl.PEM_cert_to_DER_cert(open(sys.argv[1]).read())).hexdigest())' "$CA")
XEROCTL_API_KEY=$(cat "$ROOT/router/bootstrap.key"); export XEROCTL_API_KEY

# Tools run as an unprivileged user, never as the XEM's own. As root (the XEM drops to that
# user for every tool): the packaging's `xerotier-tool` user, created here if missing, with the
# example tools and the run directory under /run, where that user can reach them. Without root
# the tools run as you and are not isolated from the XEM's keys (said at the XEM's start).
if [ "$(id -u)" = 0 ]; then
  TOOL_USER=xerotier-tool
  id -u "$TOOL_USER" >/dev/null 2>&1 ||
    useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$TOOL_USER"
  QS_RUN=/run/xerotier-quickstart
  rm -rf "$QS_RUN/tools"
  mkdir -p "$QS_RUN" && chmod 0711 "$QS_RUN"
  cp -r "$PWD/examples/tools" "$QS_RUN/tools" && chmod -R go+rX,go-w "$QS_RUN/tools"
  TOOLS_DIR="$QS_RUN/tools"
  RUN_DIR="$QS_RUN/run"
else
  TOOL_USER=$(id -un)
  TOOLS_DIR="$PWD/examples/tools"
  RUN_DIR="$ROOT/xem/run"
fi

cat >"$ROOT/xem/xem.yaml" <<YAML
router_url: https://$ADDR
registration_name: quickstart-xem
state_dir: $ROOT/xem/state
curve_key_path: $ROOT/xem/agent-curve-key.hex
signing_key_path: $ROOT/xem/agent-signing-key.hex
credentials_dir: $ROOT/xem/credentials
tools_dir: $TOOLS_DIR
tool_user: $TOOL_USER
run_dir: $RUN_DIR
lease_renewal_interval_ms: 2000
log_level: info
YAML
# The example workspace's credential (a stand-in kubeconfig), installed the way the runbook
# installs a real one: mode 0600, atomically.
mkdir -p "$ROOT/xem/credentials"
if [ ! -s "$ROOT/xem/credentials/kubernetes-prod.yaml" ]; then
  printf 'apiVersion: v1\nkind: Config\ncurrent-context: quickstart\n' >"$ROOT/xem/kubeconfig.new"
  install -m 0600 "$ROOT/xem/kubeconfig.new" "$ROOT/xem/credentials/kubernetes-prod.yaml"
  rm -f "$ROOT/xem/kubeconfig.new"
fi
if [ ! -s "$ROOT/xem/state/identity.json" ]; then
  # First run: mint a short-lived single-use join key for this XEM, granting the example
  # tools' workspace (anything else it declares would wait for approval).
  # It goes to a 0600 file, never onto a command line; the token pins this router's CA and
  # mesh key, so the XEM enrolls with this router only.
  (umask 077; "$BIN/xeroctl" -o json agents join-keys --create --name quickstart-xem \
    --workspaces kubernetes-prod --router-addr "$(cat "$ROOT/router/mesh.addr")" --ttl-seconds 300 2>/dev/null |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])' >"$ROOT/xem/join.key")
  export XEM_JOIN_KEY_FILE="$ROOT/xem/join.key"
fi
"$BIN/xerotier-xem" --config "$ROOT/xem/xem.yaml" >"$ROOT/xem.log" 2>&1 &
PIDS+=($!)
XEM_PID=$!
unset XEM_JOIN_KEY_FILE
agent_active() { "$BIN/xeroctl" -o json agents | python3 -c 'import json,sys; sys.exit(0 if any(a["name"]=="quickstart-xem" and a["status"]=="active" for a in json.load(sys.stdin)["data"]) else 1)'; }
wait_for "the XEM to connect" agent_active || { cat "$ROOT/xem.log" >&2; exit 1; }
rm -f "$ROOT/xem/join.key"   # consumed: the XEM keeps its identity in its state dir

cat <<NEXT

Xerotier is running locally:
  router  https://$ADDR  mesh $(cat "$ROOT/router/mesh.addr")   (log: $ROOT/router.log)
          its keys sealed in the store under the master key $MASTER_KEY (0600)
  XEM     quickstart-xem, enrolled and connected              (log: $ROOT/xem.log)

Next steps, in another shell:
  export PATH="$BIN:\$PATH"
  export XEROCTL_BASE_URL=https://$ADDR
  export XEROCTL_CA_FILE=$CA   # the router's own CA, $CA_PIN
  export XEROCTL_API_KEY=\$(cat $ROOT/router/bootstrap.key)   # the admin key, made on first start

  xeroctl agents                                   # the fleet: quickstart-xem is active
  xeroctl agents join-keys --create --name xem-fleet-02 --region us-east --router-addr tcp://router:5555 --ttl-seconds 600
  xeroctl agents join-keys --include-terminal
  xeroctl keys create --scope execution --name fleet-ops-2026q2
  xeroctl keys revoke --name fleet-ops-2026q2
  xeroctl audit

  # Run a tool on the XEM, then rotate its workspace credential without interrupting work:
  xeroctl exec tools
  xeroctl exec invoke --workspace kubernetes-prod --tool kubectl-get --args '{"kind":"pods","namespace":"default"}' --wait
  xeroctl exec invoke --workspace kubernetes-prod --tool sleep --args '{"seconds":20}'   # in flight
  install -m 0600 /path/to/new-kubeconfig $ROOT/xem/credentials/kubernetes-prod.yaml
  kill -HUP \$(pgrep -f 'xerotier-xem --config $ROOT')                # = systemctl reload xerotier-xem
  xeroctl agents \$(xeroctl -o json agents | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"][0]["id"])') --events
  xeroctl exec list                                                 # the sleep finished on its old credential

Press Ctrl-C to stop the router and the XEM.
NEXT
if [ "$REPLICAS" -gt 1 ]; then
  cat <<NEXT

$REPLICAS replicas share PostgreSQL postgres://postgres@127.0.0.1:$PG_PORT/xerotier (data in $PG_DIR):
  replica 1 https://$ADDR  mesh $(cat "$ROOT/router/mesh.addr")   (pid ${PIDS[0]}, log: $ROOT/router.log)
${REPLICA_LINES}
  xeroctl router replicas                          # each replica, live, and the sessions it holds
  xeroctl agents -o wide                           # REPLICA: where quickstart-xem's session is
  kill -9 ${PIDS[0]}                                   # kill replica 1: the XEM moves to another in seconds
  xeroctl --base-url https://\$(cat $ROOT/router-2/http.addr) agents -o wide
NEXT
fi
if [ "$REPLICAS" -gt 1 ]; then
  wait "$XEM_PID"   # a replica may die (try it): the others and the XEM go on
else
  wait -n "${PIDS[@]}"
fi
