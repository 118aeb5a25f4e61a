#!/usr/bin/env bash
# The whole test suite: unit tests, then integration and end-to-end tests on real namespaces
# and a real etcd. Needs root. Extra arguments go to pytest.
set -euo pipefail
source "$(dirname "$0")/root.sh"
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest -q -p no:cacheprovider tests "$@"
