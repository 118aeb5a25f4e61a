#!/usr/bin/env bash
# Debian packages the benchmarks need on top of scripts/setup.sh:
#   docker.io       Docker 20.10 (dockerd with --cluster-store: the overlay reference)
#   busybox-static  /bin/busybox, imported as the Docker image busybox:bench (no registry)
#   iperf3          throughput; containernetworking-plugins: the reference CNI bridge plugin
# Python side (matplotlib): bash scripts/setup.sh --bench. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

DEBS=(docker.io busybox-static iperf3 containernetworking-plugins iputils-ping iproute2 util-linux)
missing=()
for p in "${DEBS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "bench/setup.sh: installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  # The package would start a system dockerd; the benchmarks start their own, one per
  # sandbox host, and never use the system one.
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c "import matplotlib" 2>/dev/null; then
  bash scripts/setup.sh --bench
fi
echo "bench/setup.sh: ready: sudo .venv/bin/python -m bench all"
