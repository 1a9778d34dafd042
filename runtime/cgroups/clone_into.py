"""fork() straight into a cgroup v2 directory (clone3 with CLONE_INTO_CGROUP, Linux >= 5.7).

Moving a process into a cgroup (a cgroup.procs write) takes the kernel's cgroup threadgroup
lock for writing, which waits for an RCU grace period unless the hierarchy is mounted with
favordynmods: measured here 7.5-20 ms for a write after an idle moment, 0.1 ms for one
within a few ms of the last. A child cloned into its cgroup is never moved: no lock, no
wait. The shim's exec'd processes (runtime.shim.spawn.fork_exec) and a container's process
(container_init: the fork that makes the keeper) start this way on v2.
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
    """Whether fork_in_cgroup would try clone3 for `cgroup_path`: cgroup v2, a kernel not
    known to refuse it, and a single-threaded caller (clone3 runs no at-fork handlers)."""
    return bool(cgroup_path) and _clone_into_cgroup and cgmode.detect_mode() == "v2" \
        and threading.active_count() == 1


def fork_in_cgroup(cgroup_path: str | None) -> tuple[int, bool]:
    """fork(); on cgroup v2 the child starts in `cgroup_path` (a path below the cgroup root).
    (pid, joined): joined tells the child it is in the cgroup already. Falls back to a plain
    fork, the child joining itself: on v1/hybrid (the v1 controllers need their cgroup.procs
    anyway), without clone3, with more than one thread, when the directory is gone, and where
    the kernel refuses the cgroup (EBUSY: the container made it an inner node)."""
    global _clone_into_cgroup
    if not may_clone_into(cgroup_path):
        return os.fork(), False
    assert cgroup_path is not None
    try:
        fd = os.open(os.path.join(cgmode.CGROUP_ROOT, cgroup_path.lstrip("/")),
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
