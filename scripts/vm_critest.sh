#!/usr/bin/env bash
# critest (critest/run: the whole CRI conformance suite, offline) against pycri inside the VM
# of scripts/vm.sh: cgroup v2 with every controller and AppArmor, so the cgroup v2, AppArmor
# and UserNamespaces specs run for real. Measured 2026-12-03 (kernel 6.12.95, 2 shared cores
# busy with another VM): 135 passed, 1 failed (the digest-pinned image, expected), 6 skipped;
# critest 867 s, 24 min with boot and set-up. Not part of CI: that would triple the CI time.
# Arguments go to critest/run (e.g. --focus UserNamespaces, --keep).
# PYCRI_VM_SYSTEMD=1: the guest boots systemd as PID 1 (scripts/vm.sh) and pycri runs with
# cgroup_driver = "systemd" (critest then gives its pods the cgroup parent /test.slice).
# CRITEST names the binary (default: critest on PATH, else /opt/cri-tools-bin/critest).
# Runs scripts/setup.sh first unless PYCRI_SKIP_SETUP=1.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "${PYCRI_SKIP_SETUP:-0}" = 1 ] || bash scripts/setup.sh
CRITEST=${CRITEST:-$(command -v critest || echo /opt/cri-tools-bin/critest)}
[ -x "$CRITEST" ] || { echo "vm_critest.sh: no critest binary at $CRITEST (set CRITEST)" >&2; exit 2; }
PY=${PYTHON:-python3}
# the real interpreter first (not a pyenv shim: seconds per start under TCG), then critest's dir
PYBIN=$(dirname "$("$PY" -c 'import sys; print(sys.executable)')")
DRIVER=()
[ "${PYCRI_VM_SYSTEMD:-0}" = 1 ] && DRIVER=(--cgroup-driver systemd)
exec bash scripts/vm.sh env "PATH=$PYBIN:$(dirname "$CRITEST"):$PATH" "CRITEST=$CRITEST" \
  "$PYBIN/python3" critest/run "${DRIVER[@]}" "$@"
