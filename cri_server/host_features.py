"""What this host's kernel offers, probed once (the probes themselves are the runtime's)."""
from __future__ import annotations

import functools
import platform

from runtime import apparmor
from runtime.cgroups.mode import detect_mode


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
        return "v2" if detect_mode() == "v2" else "v1"
    except OSError:
        return "v1"


@functools.cache
def apparmor_enabled() -> bool:
    return apparmor.apparmor_enabled()
