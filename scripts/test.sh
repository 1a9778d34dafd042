#!/usr/bin/env bash
# Sets up (scripts/setup.sh) and runs the whole test suite, as root: the host suite, then the
# VM leg (cgroup v2 with every controller and AppArmor, in a guest kernel: scripts/vm_test.sh).
# Both always run; the exit status is non-zero if either failed.
# With arguments, only the host suite runs, as `pytest ARGS...` (e.g. one file).
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit $?
PY=${PYTHON:-python3}
if [ "$#" -gt 0 ]; then
  exec "$PY" -m pytest -ra -p no:cacheprovider "$@"
fi
"$PY" -m pytest -ra -p no:cacheprovider
host=$?
PYCRI_SKIP_SETUP=1 bash scripts/vm_test.sh
vm=$?
echo "host suite: exit $host; VM leg: exit $vm"
[ "$host" = 0 ] && [ "$vm" = 0 ]
