"""What this host's kernel offers, probed once (the probes themselves are the runtime's)."""
from __future__ import annotations

import functools
import logging
import os
import platform
import threading

from runtime import apparmor, userns
from runtime.cgroups.mode import detect_mode

log = logging.getLogger(__name__)


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


def apparmor_status() -> dict[str, object]:
    """For Status' verbose info: whether the kernel enforces AppArmor, and pycri's profile."""
    enabled = apparmor.apparmor_enabled()
    return {"enabled": enabled, "defaultProfile": apparmor.DEFAULT_PROFILE,
            "defaultProfileLoaded": enabled
            and apparmor.DEFAULT_PROFILE in apparmor.loaded_profiles()}


HUGEPAGES_DIR = "/sys/kernel/mm/hugepages"


@functools.cache
def hugepage_sizes() -> tuple[str, ...]:
    """The huge page sizes the kernel offers, as kubelet and the hugetlb cgroup name them
    ("2MB", "1GB"), smallest first; empty without hugetlb support."""
    return hugepage_sizes_in(HUGEPAGES_DIR)


def hugepage_sizes_in(directory: str) -> tuple[str, ...]:
    """Page sizes from the hugepages-<N>kB entries of `directory`."""
    try:
        names = os.listdir(directory)
    except OSError:
        return ()
    sizes = []
    for name in names:
        kb = name.removeprefix("hugepages-").removesuffix("kB")
        if name.startswith("hugepages-") and name.endswith("kB") and kb.isdigit():
            sizes.append(int(kb) * 1024)
    return tuple(page_size_name(b) for b in sorted(sizes))


def page_size_name(size: int) -> str:
    """A page size in bytes as the kernel names it in hugetlb.<size>.* files."""
    if size >= 1 << 30:
        return f"{size >> 30}GB"
    if size >= 1 << 20:
        return f"{size >> 20}MB"
    return f"{size >> 10}KB"




_userns_lock = threading.Lock()
_userns_result: dict[tuple[str, ...], tuple[bool, str]] = {}


def user_namespaces(*dirs: str) -> tuple[bool, str]:
    """(supported, reason when not): user namespaces plus idmapped mounts on `dirs` (pycri's
    root and state), tmpfs and overlayfs; probed once per set of dirs (runtime.userns.probe_host,
    in a process of its own), the first caller waits for it."""
    with _userns_lock:
        found = _userns_result.get(dirs)
        if found is None:
            found = userns.probe_host([d for d in dirs if os.path.isdir(d)])
            _userns_result[dirs] = found
            if found[0]:
                log.info("user namespaces (hostUsers: false): supported")
            else:
                log.warning("user namespaces (hostUsers: false) are not supported: %s", found[1])
        return found
