#!/usr/bin/env bash
# Installs the system packages the build and tests need on a fresh Debian machine.
set -euo pipefail
SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
need=()
# libzmq with CURVE (Debian's is built with libsodium); pkg-config for -sys crates.
dpkg -s libzmq3-dev >/dev/null 2>&1 || need+=(libzmq3-dev)
dpkg -s pkg-config >/dev/null 2>&1 || need+=(pkg-config)
ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || need+=(postgresql)
# The API contract check (scripts/api-contract.sh): curl, and a Python that can make a venv.
command -v curl >/dev/null 2>&1 || need+=(curl)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need+=(python3-venv)
if [ "${#need[@]}" -gt 0 ]; then
  echo "installing: ${need[*]}" >&2
  $SUDO apt-get update -q >&2
  $SUDO apt-get install -y -q "${need[@]}" >&2
fi
# promtool, for the alert rules' tests (deploy/prometheus): Debian ships it in `prometheus`,
# whose recommended packages (web assets) it does not need.
if ! command -v promtool >/dev/null 2>&1; then
  echo "installing: prometheus (for promtool)" >&2
  $SUDO apt-get update -q >&2
  $SUDO apt-get install -y -q --no-install-recommends prometheus >&2
fi
