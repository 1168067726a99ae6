#!/usr/bin/env bash
# Runs the test suite on this machine: installs what is missing, then pytest on every tier, whose
# fixtures start (and stop) a private Docker Engine via scripts/docker-sandbox.sh and a Kubernetes
# control plane (etcd, kube-apiserver, kube-controller-manager) in pytest's temporary directory.
# The Kubernetes binaries are built once from Debian's source package by scripts/build-kube.sh
# (about 5 minutes) into a cache outside the checkout.
#
#   scripts/test.sh [PYTEST ARGS]          every tier
#   scripts/test.sh --fast [PYTEST ARGS]   the unit tier only (tests/unit): no daemon, no control
#                                          plane, nothing installed beyond the venv
set -euo pipefail
cd "$(dirname "$0")/.."

fast=false
if [ "${1:-}" = "--fast" ]; then
  fast=true
  shift
fi

if ! $fast; then
  missing=""
  for tool in dockerd docker busybox redis-server docker-registry; do
    command -v "$tool" >/dev/null || missing="$missing $tool"
  done
  if [ -n "$missing" ]; then
    if [ "$(id -u)" -ne 0 ]; then
      echo "missing:$missing; install them with apt-get install docker.io busybox-static redis-server docker-registry (as root)" >&2
      exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q docker.io busybox-static redis-server docker-registry
  fi

  kube_bin=${NEKZUS_KUBE_BIN:-${NEKZUS_KUBE_CACHE:-/var/cache/nekzus-kube}/bin}
  if [ ! -x "$kube_bin/kube-apiserver" ] || [ ! -x "$kube_bin/kube-controller-manager" ] || ! command -v etcd >/dev/null; then
    if [ "$(id -u)" -ne 0 ]; then
      echo "missing Kubernetes binaries or etcd; build them with scripts/build-kube.sh (as root)" >&2
      exit 1
    fi
    scripts/build-kube.sh
  fi
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
# The project and its test dependencies, again whenever pyproject.toml has changed since.
installed=.venv/.nekzus-installed
if [ ! -f "$installed" ] || [ pyproject.toml -nt "$installed" ]; then
  mkdir -p .sandbox
  .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]' >.sandbox/pip.log 2>&1 \
    || { cat .sandbox/pip.log >&2; exit 1; }
  touch "$installed"
fi

if $fast; then
  exec .venv/bin/python -m pytest -m unit tests/unit "$@"
fi
exec .venv/bin/python -m pytest "$@"
