#!/usr/bin/env bash
# Starts a local router (embedded SQLite store) and one enrolled XEM agent, state in
# .xerotier-local/, and prints what to do next. Ctrl-C stops both; running it again keeps the
# state (the XEM reconnects with its stored identity, no new join key needed).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo build --release --bins
BIN="$PWD/target/release"
ROOT="$PWD/.xerotier-local"
mkdir -p "$ROOT/xem"
LISTEN="${XEROTIER_QUICKSTART_LISTEN:-127.0.0.1:8080}"
MESH="${XEROTIER_QUICKSTART_MESH:-tcp://127.0.0.1:5555}"
PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

wait_for() { # $1 = description, $2.. = command that succeeds when ready
  local what=$1; shift
  for _ in $(seq 1 150); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "timed out waiting for $what" >&2; return 1
}

"$BIN/xerotier-router" --state-dir "$ROOT/router" --listen "$LISTEN" --mesh-bind "$MESH" \
  >"$ROOT/router.log" 2>&1 &
PIDS+=($!)
wait_for "the router" test -s "$ROOT/router/http.addr" || { cat "$ROOT/router.log" >&2; exit 1; }
ADDR=$(cat "$ROOT/router/http.addr")
# The router serves HTTPS with a CA of its own (created on first start, kept in its state dir).
CA="$ROOT/router/tls/ca.pem"
wait_for "the router's health check" curl -fsS --cacert "$CA" "https://$ADDR/healthz"
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
unset XEM_JOIN_KEY_FILE
agent_active() { "$BIN/xeroctl" -o json agents | python3 -c 'import json,sys; sys.exit(0 if any(a["name"]=="quickstart-xem" and a["status"]=="active" for a in json.load(sys.stdin)["data"]) else 1)'; }
wait_for "the XEM to connect" agent_active || { cat "$ROOT/xem.log" >&2; exit 1; }
rm -f "$ROOT/xem/join.key"   # consumed: the XEM keeps its identity in its state dir

cat <<NEXT

Xerotier is running locally:
  router  https://$ADDR  mesh $(cat "$ROOT/router/mesh.addr")   (log: $ROOT/router.log)
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
wait -n "${PIDS[@]}"
