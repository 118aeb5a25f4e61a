#!/usr/bin/env bash
# The main job: install what is needed, build a 2-host sandbox and walk the overlay seed.
set -euo pipefail
source "$(dirname "$0")/root.sh"
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/overnet sandbox demo "$@"
