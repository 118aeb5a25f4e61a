#!/usr/bin/env bash
# Installs what overnet needs on a fresh Debian 12 machine: Debian packages and a virtual
# environment (.venv) with the Python dependencies. Safe to run again: it skips what is there.
set -euo pipefail
source "$(dirname "$0")/root.sh"
cd "$(dirname "$0")/.."

DEBS=(etcd-server etcd-client iproute2 iptables nftables iputils-ping iperf3 tcpdump
      containernetworking-plugins util-linux procps python3-venv
      podman docker.io busybox-static gcc libc6-dev)
# Podman, Docker 20.10 and busybox (their image): real runtimes on overnet (tests, `sandbox up
# --runtimes`) and the benchmarks' overlay reference.
# gcc, libc6-dev: `overnet cni install` compiles the overnet-cni shim (else the slower Python one).
# ethtool: `python -m bench tuning` switches GRO on the overlay's devices with it.
[ "${1:-}" = "--bench" ] && DEBS+=(ethtool)
missing=()
DEBS+=(graphviz)     # `overnet graph` draws with Graphviz's dot
for p in "${DEBS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating virtual environment .venv"
  "$PY" -m venv .venv
fi
extras=test
[ "${1:-}" = "--bench" ] && extras=test,bench
stamp=.venv/.installed-${extras/,/-}
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "setup: installing Python dependencies ($extras) into .venv"
  .venv/bin/pip install -q --disable-pip-version-check -e ".[${extras}]"
  touch "$stamp"
fi
# The `overnet` command without pip's wrapper (its imports cost half of a quick command), with
# the compiled front before it (`run -d` and `ps` without starting Python) when gcc is there.
.venv/bin/python -m overnet.cli.launcher .venv/bin/overnet
echo "setup: ready (.venv/bin/overnet)"
