#!/usr/bin/env bash
# The VM leg, as root: the tests that need a real cgroup v2 host with every controller and
# AppArmor (tests/vm, plus the runtime.cgroups integration tests against the real hierarchy), in
# the guest of scripts/vm.sh. Arguments replace the default selection. Runs scripts/setup.sh
# first unless PYCRI_SKIP_SETUP=1 (scripts/test.sh has just run it).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "${PYCRI_SKIP_SETUP:-0}" = 1 ] || bash scripts/setup.sh
PY=${PYTHON:-python3}
if [ "$#" -eq 0 ]; then
  set -- tests/vm tests/integration/test_container_init_cgroups.py
fi
# Per-test limit: the guest's CPU is emulated (TCG), 30-60x slower than the host.
exec bash scripts/vm.sh "$PY" -m pytest -ra -p no:cacheprovider -o timeout=1200 --durations=10 "$@"
