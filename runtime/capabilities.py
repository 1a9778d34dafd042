"""Apply a process's capability sets and switch to its user (container init only).

Order (as runc): drop the bounding set (needs CAP_SETPCAP, still held) -> PR_SET_KEEPCAPS ->
setgroups/setresgid/setresuid (permitted survives, effective is cleared) -> capset(effective,
permitted, inheritable) -> raise ambient capabilities. After execve a uid-0 process gets its
bounding set as effective/permitted; other uids keep only the ambient set (Linux semantics).
"""
from __future__ import annotations

import errno
import os

from runtime import syscalls
from runtime.capability_names import CAPABILITY_NUMBERS, capabilities_to_mask, last_cap
from runtime.container_spec import Capabilities


def drop_bounding_set(keep: list[str]) -> None:
    """Drop every capability not in `keep` from the bounding set."""
    keep_mask = capabilities_to_mask(keep)
    for cap in range(last_cap() + 1):
        if keep_mask & (1 << cap):
            continue
        try:
            syscalls.prctl(syscalls.PR_CAPBSET_DROP, cap)
        except OSError as e:
            if e.errno != errno.EINVAL:  # a cap this kernel does not know
                raise


def switch_user(uid: int, gid: int, groups: list[int]) -> None:
    """setgroups + setresgid + setresuid, keeping the permitted capability set."""
    syscalls.set_keepcaps(True)
    os.setgroups(groups)
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    syscalls.set_keepcaps(False)


def apply_capabilities(caps: Capabilities) -> None:
    """capset effective/permitted/inheritable, then raise the ambient set.

    Capabilities the runtime itself does not hold (e.g. CAP_SYS_RESOURCE on hosts that deny it
    to root) cannot be granted: every set is limited to our current permitted set, so a
    privileged container gets everything the runtime has."""
    have = syscalls.capget().permitted
    syscalls.capset(syscalls.CapSets(
        effective=capabilities_to_mask(list(caps.effective)) & have,
        permitted=capabilities_to_mask(list(caps.permitted)) & have,
        inheritable=capabilities_to_mask(list(caps.inheritable)) & have))
    for name in caps.ambient:
        if not have & (1 << CAPABILITY_NUMBERS[name]):
            continue
        syscalls.prctl(syscalls.PR_CAP_AMBIENT, syscalls.PR_CAP_AMBIENT_RAISE,
                       CAPABILITY_NUMBERS[name])


def setup_process_credentials(caps: Capabilities, uid: int, gid: int,
                              groups: list[int]) -> None:
    """The whole sequence for a container process (bounding, user, caps, ambient)."""
    drop_bounding_set(list(caps.bounding))
    switch_user(uid, gid, groups)
    apply_capabilities(caps)
