"""cgroup v2 delegation: giving a container's cgroup to the root of its user namespace.

The OCI runtime spec ("cgroup ownership", as runc does it) delegates a container's cgroup when
the container has a new cgroup namespace and a read-write cgroup2 mount at /sys/fs/cgroup: the
cgroup directory and the files the kernel lists as delegatable (/sys/kernel/cgroup/delegate;
cgroup.procs, cgroup.subtree_control and cgroup.threads when it is absent) are chowned to the
container's user. Every other file (memory.max, pids.max, ...) stays owned by host root, which
is unmapped in the user namespace, so no capability inside lets the container write it: the
limits are set from outside and hold for everything it builds below its cgroup.
"""
from __future__ import annotations

import contextlib
import os

DELEGATE_LIST = "/sys/kernel/cgroup/delegate"
FALLBACK = ("cgroup.procs", "cgroup.subtree_control", "cgroup.threads")


def delegatable_files(listing: str | None) -> tuple[str, ...]:
    """The file names of /sys/kernel/cgroup/delegate's text (None: the file is absent)."""
    if listing is None:
        return FALLBACK
    names = tuple(n for n in listing.split() if n and "/" not in n and n not in (".", ".."))
    return names or FALLBACK


def read_delegatable_files(path: str | None = None) -> tuple[str, ...]:
    try:
        with open(path or DELEGATE_LIST) as f:
            return delegatable_files(f.read())
    except FileNotFoundError:
        return delegatable_files(None)


def delegate(directory: str, uid: int, gid: int,
             names: tuple[str, ...] | None = None) -> list[str]:
    """chown `directory` and its delegatable files that exist to uid:gid; returns the paths
    changed (a listed file this kernel or controller set lacks is skipped)."""
    changed = [directory]
    os.chown(directory, uid, gid, follow_symlinks=False)
    for name in read_delegatable_files() if names is None else names:
        path = os.path.join(directory, name)
        with contextlib.suppress(FileNotFoundError):
            os.chown(path, uid, gid, follow_symlinks=False)
            changed.append(path)
    return changed
