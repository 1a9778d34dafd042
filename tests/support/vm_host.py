"""What the VM leg (tests/vm, scripts/vm.sh) requires of its host, as problems to fail on."""
from __future__ import annotations

import os
import shutil

REQUIRED_CONTROLLERS = ("cpuset", "cpu", "io", "memory", "hugetlb", "pids")


def in_vm_leg() -> bool:
    return os.environ.get("PYCRI_VM") == "1"


def in_systemd_leg() -> bool:
    return in_vm_leg() and os.environ.get("PYCRI_VM_SYSTEMD") == "1"


def in_v1_leg() -> bool:
    """The systemd boot with cgroup v1 (PYCRI_VM_CGROUP=hybrid scripts/vm.sh)."""
    return in_systemd_leg() and os.environ.get("PYCRI_VM_CGROUP") == "hybrid"


def v1_problem() -> str:
    """'' when the v1 controllers pycri uses are mounted, with systemd's cgroup2 beside them."""
    from runtime.cgroups import mode
    if mode.detect_mode() != "hybrid":
        return f"the cgroup layout is {mode.detect_mode()}, not hybrid"
    have = mode.v1_hierarchies()
    missing = [c for c in ("cpu", "cpuacct", "memory", "pids", "cpuset", "devices", "freezer")
               if c not in have]
    return f"v1 controllers missing: {' '.join(missing)}" if missing else ""


def systemd_problem() -> str:
    """'' when systemd is PID 1 and answers on the system bus (the systemd cgroup driver)."""
    with open("/proc/1/comm") as f:
        if f.read().strip() != "systemd":
            return "PID 1 is not systemd"
    from runtime.cgroups.systemd_dbus import systemd_problem as problem
    return problem()


def cgroup2_problem() -> str:
    """'' when /sys/fs/cgroup is a cgroup2 mount offering every controller pycri uses."""
    with open("/proc/self/mounts") as f:
        mounts = [line.split() for line in f]
    if not any(m[1] == "/sys/fs/cgroup" and m[2] == "cgroup2" for m in mounts if len(m) > 2):
        return "/sys/fs/cgroup is not a cgroup2 mount"
    if any(m[2] == "cgroup" for m in mounts if len(m) > 2):
        return "cgroup v1 hierarchies are mounted too"
    with open("/sys/fs/cgroup/cgroup.controllers") as f:
        have = set(f.read().split())
    missing = [c for c in REQUIRED_CONTROLLERS if c not in have]
    return f"controllers missing: {' '.join(missing)}" if missing else ""


def apparmor_problem() -> str:
    try:
        with open("/sys/module/apparmor/parameters/enabled") as f:
            if f.read().strip() != "Y":
                return "AppArmor is not enabled in the kernel"
    except OSError:
        return "the kernel has no AppArmor"
    if not os.path.isdir("/sys/kernel/security/apparmor"):
        return "securityfs is not mounted at /sys/kernel/security"
    if shutil.which("apparmor_parser") is None:
        return "apparmor_parser is missing (package apparmor)"
    return ""
