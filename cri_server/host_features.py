"""What this host's kernel offers, probed once."""
from __future__ import annotations

import functools
import platform


@functools.cache
def recursive_read_only_mounts() -> bool:
    """mount_setattr(2) with MOUNT_ATTR_RDONLY|AT_RECURSIVE needs Linux 5.12."""
    try:
        major, minor = (int(x) for x in platform.release().split(".")[:2])
    except ValueError:
        return False
    return (major, minor) >= (5, 12)


@functools.cache
def cgroup_mode() -> str:
    """'v2' when /sys/fs/cgroup is a cgroup2 mount, 'v1' (legacy or hybrid) otherwise."""
    try:
        return "v2" if _fstype("/sys/fs/cgroup") == "cgroup2" else "v1"
    except OSError:
        return "v1"


def _fstype(path: str) -> str:
    best = ("", "")
    with open("/proc/self/mounts") as f:
        for line in f:
            fields = line.split()
            covers = len(fields) >= 3 and (path == fields[1]
                                           or path.startswith(fields[1].rstrip("/") + "/"))
            if covers and len(fields[1]) >= len(best[0]):
                best = (fields[1], fields[2])
    return best[1]


@functools.cache
def apparmor_enabled() -> bool:
    try:
        with open("/sys/module/apparmor/parameters/enabled") as f:
            return f.read().strip() == "Y"
    except OSError:
        return False
