#!/usr/bin/env bash
# Sets up (scripts/setup.sh) and runs the whole test suite, as root.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
PY=${PYTHON:-python3}
exec "$PY" -m pytest -ra -p no:cacheprovider "$@"
