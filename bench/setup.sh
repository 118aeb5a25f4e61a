#!/usr/bin/env bash
# What the benchmarks need: scripts/setup.sh --bench installs Docker 20.10 (the overlay
# reference, started per sandbox host by bench/, never the system one), busybox-static (its
# image, made with `docker import`) and matplotlib, on top of the usual set-up.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --bench
echo "bench/setup.sh: ready: sudo .venv/bin/python -m bench all"
