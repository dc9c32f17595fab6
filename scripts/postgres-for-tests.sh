#!/usr/bin/env bash
# Starts a throwaway PostgreSQL 15 for the test suite and prints the admin URL to export as
# XEROTIER_TEST_POSTGRES_URL. Usage: eval "$(scripts/postgres-for-tests.sh start)"; ... ; scripts/postgres-for-tests.sh stop
set -euo pipefail
PORT="${XEROTIER_TEST_PG_PORT:-55432}"
DIR="${XEROTIER_TEST_PG_DIR:-/tmp/xerotier-pg}"
run_as_postgres() {
  if [ "$(id -u)" = 0 ]; then su postgres -s /bin/bash -c "$*"; else bash -c "$*"; fi
}
find_bin() {
  for d in /usr/lib/postgresql/*/bin; do
    [ -x "$d/pg_ctl" ] && { echo "$d"; return; }
  done
  return 1
}
case "${1:-start}" in
  start)
    if ! BIN=$(find_bin); then
      echo "installing postgresql (server binaries not found)" >&2
      SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
      DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q postgresql >&2
      BIN=$(find_bin)
    fi
    if run_as_postgres "$BIN/pg_ctl -D $DIR/d status" >/dev/null 2>&1; then
      echo "export XEROTIER_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:$PORT/postgres"
      exit 0
    fi
    rm -rf "$DIR"; mkdir -p "$DIR"
    [ "$(id -u)" = 0 ] && chown postgres "$DIR"
    run_as_postgres "$BIN/initdb -D $DIR/d -A trust -U postgres" >/dev/null
    run_as_postgres "$BIN/pg_ctl -D $DIR/d -l $DIR/log -w -o '-p $PORT -k /tmp -c listen_addresses=127.0.0.1 -c max_connections=400 -c fsync=on' start" >&2
    echo "export XEROTIER_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:$PORT/postgres"
    ;;
  stop)
    BIN=$(find_bin)
    run_as_postgres "$BIN/pg_ctl -D $DIR/d -m fast stop" >&2 || true
    ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
