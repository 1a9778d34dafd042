#!/usr/bin/env bash
# Sets up (scripts/setup.sh) and runs the daemon with its default configuration, as root.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec pycri serve "$@"
