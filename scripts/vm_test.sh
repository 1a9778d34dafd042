#!/usr/bin/env bash
# The VM leg, as root: the tests that need a real cgroup v2 host with every controller and
# AppArmor (tests/vm, plus the runtime.cgroups and user namespace integration tests against the
# real hierarchy and kernel), in the guest of scripts/vm.sh; then a second boot with systemd as
# PID 1 for the systemd cgroup driver (tests/vm/test_systemd_driver.py, PYCRI_VM_SYSTEMD=1), and
# a third with systemd on cgroup v1 (tests/vm/test_systemd_v1.py, PYCRI_VM_CGROUP=hybrid).
# Arguments replace the default selection (one boot, PYCRI_VM_SYSTEMD as set). Runs
# scripts/setup.sh first unless PYCRI_SKIP_SETUP=1 (scripts/test.sh has just run it).
set -uo pipefail
cd "$(dirname "$0")/.."
[ "${PYCRI_SKIP_SETUP:-0}" = 1 ] || bash scripts/setup.sh || exit $?
PY=${PYTHON:-python3}
# Per-test limit: the guest's CPU is emulated (TCG), 30-60x slower than the host.
PYTEST=("$PY" -m pytest -ra -p no:cacheprovider -o timeout=1200 --durations=10)
if [ "$#" -gt 0 ]; then
  exec bash scripts/vm.sh "${PYTEST[@]}" "$@"
fi
# The user namespace tests run here too (cgroup v2, a 6.12 kernel, AppArmor), but not the
# four that kill and restart daemons: under TCG each takes 5 minutes (the other 23: ~2.5).
UNS=tests/integration/test_user_namespaces.py
# The stats and metrics tests whose figures come from the cgroup files run here too (cpu,
# memory, pod cgroup and network, cAdvisor metrics: ~1 min of pytest); the three about List filters
# and states read no cgroup file and stay on the host.
STATS=tests/integration/test_stats.py
PYCRI_VM_SYSTEMD=0 bash scripts/vm.sh "${PYTEST[@]}" tests/vm \
  tests/integration/test_container_init_cgroups.py "$UNS" "$STATS" \
  --deselect "$UNS::test_kill9_restart_keeps_userns_pods_ready_and_execable" \
  --deselect "$UNS::test_crash_during_userns_run_pod_sandbox" \
  --deselect "$STATS::test_list_container_stats_filters_and_states" \
  --deselect "$STATS::test_list_pod_stats_filters_and_only_ready_pods" \
  --deselect "$STATS::test_list_container_stats_covers_many_containers"
cgroupfs=$?
PYCRI_VM_SYSTEMD=1 bash scripts/vm.sh "${PYTEST[@]}" tests/vm/test_systemd_driver.py
systemd=$?
# The systemd driver on cgroup v1 (systemd's hybrid layout): ~5 min with its boot.
PYCRI_VM_SYSTEMD=1 PYCRI_VM_CGROUP=hybrid bash scripts/vm.sh "${PYTEST[@]}" \
  tests/vm/test_systemd_v1.py
systemd_v1=$?
echo "VM leg: cgroupfs boot exit $cgroupfs; systemd (PID 1) boot exit $systemd;" \
  "systemd on cgroup v1 boot exit $systemd_v1"
[ "$cgroupfs" = 0 ] && [ "$systemd" = 0 ] && [ "$systemd_v1" = 0 ]
