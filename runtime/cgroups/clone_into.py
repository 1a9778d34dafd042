"""fork() straight into a cgroup of the unified hierarchy (clone3 with CLONE_INTO_CGROUP,
Linux >= 5.7): the whole cgroup on v2, its unified part on hybrid hosts.

Moving a process into a cgroup (a cgroup.procs write) takes the kernel's cgroup threadgroup
lock for writing, which waits for an RCU grace period unless the hierarchy is mounted with
favordynmods: measured here 7.5-20 ms for a write after an idle moment, 0.1 ms for one
within a few ms of the last. A child cloned into its cgroup is never moved: no lock, no
wait. A v1 hierarchy has no clone into a cgroup, but a single-threaded process moving itself
through `tasks` takes no such lock either (runtime.cgroups.manager's join_self): what a
forked child does after the fork. The shim's exec'd processes (runtime.shim.spawn.fork_exec)
and a container's process (container_init: the fork that makes the keeper) start this way.
"""
from __future__ import annotations

import errno
import os
import threading

from runtime import syscalls
from runtime.cgroups import mode as cgmode

# False once this kernel refused clone3 or CLONE_INTO_CGROUP itself (before 5.7, or a seccomp
# filter around the shim): every fork then is a plain one, the child writing cgroup.procs.
_clone_into_cgroup = True
_CLONE3_UNSUPPORTED = (errno.ENOSYS, errno.EPERM, errno.E2BIG)


def may_clone_into(cgroup_path: str | None) -> bool:
    """Whether fork_in_cgroup would try clone3 for `cgroup_path`: a unified hierarchy (v2 or
    hybrid), a kernel not known to refuse it, and a single-threaded caller (clone3 runs no
    at-fork handlers)."""
    return bool(cgroup_path) and _clone_into_cgroup and threading.active_count() == 1 \
        and cgmode.unified_root(cgmode.CGROUP_ROOT) is not None


def fork_in_cgroup(cgroup_path: str | None) -> tuple[int, bool]:
    """fork(); where there is a unified hierarchy the child starts in its `cgroup_path` (a path
    below the hierarchy's root). (pid, joined): joined tells the child it is in the unified
    hierarchy's cgroup already (Cgroup.join_self(unified_joined) does the rest: nothing on
    v2, the v1 hierarchies on hybrid hosts). Falls back to a plain fork, the child joining
    itself: on pure v1, without clone3, with more than one thread, when the directory is
    gone, and where the kernel refuses the cgroup (EBUSY: the container made it an inner
    node)."""
    global _clone_into_cgroup
    if not may_clone_into(cgroup_path):
        return os.fork(), False
    assert cgroup_path is not None
    root = cgmode.unified_root(cgmode.CGROUP_ROOT)
    assert root is not None
    try:
        fd = os.open(os.path.join(root, cgroup_path.lstrip("/")),
                     os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return os.fork(), False   # gone or renamed: the child's own join reports it
    try:
        return syscalls.fork_into_cgroup(fd), True
    except OSError as e:
        if e.errno in _CLONE3_UNSUPPORTED:
            _clone_into_cgroup = False
        return os.fork(), False
    finally:
        os.close(fd)   # in the child too: it must not keep the caller's descriptor
