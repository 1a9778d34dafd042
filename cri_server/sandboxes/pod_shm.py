"""The pod's shared /dev/shm: one tmpfs per pod, bind-mounted by each of its containers.

Containers of a pod share its IPC namespace, so (like containerd) they share one /dev/shm
too: RunPodSandbox mounts a 64 MiB tmpfs at <state>/shm/<pod-id> (pods with host IPC get
none: their containers bind the host's /dev/shm); Stop/RemovePodSandbox, the undo of a
half-made pod and start-up recovery (`collect_orphans`) unmount and remove it. The path is
decided up front and kept in the pod's record (`SandboxRecord.shm_path`).
"""
from __future__ import annotations

import errno
import logging
import os
from collections.abc import Iterable
from pathlib import Path

from runtime import syscalls

log = logging.getLogger(__name__)

SHM_SIZE = "65536k"  # containerd's default
HOST_SHM = "/dev/shm"


def shm_root(state_dir: Path) -> Path:
    return state_dir / "shm"


def shm_path(state_dir: Path, pod_id: str) -> str:
    return str(shm_root(state_dir) / pod_id)


def _is_mount_point(path: str) -> bool:
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == path for line in f)


def create(path: str) -> None:
    """Mount the pod's tmpfs at path (idempotent: an existing mount is kept)."""
    os.makedirs(os.path.dirname(path), mode=0o711, exist_ok=True)
    os.makedirs(path, mode=0o755, exist_ok=True)
    if _is_mount_point(path):
        return
    flags = syscalls.MS_NOSUID | syscalls.MS_NODEV | syscalls.MS_NOEXEC
    try:
        syscalls.mount("shm", path, "tmpfs", flags, f"mode=1777,size={SHM_SIZE}")
    except OSError:
        _rmdir(path)
        raise
    syscalls.mount(None, path, None, syscalls.MS_PRIVATE)


def remove(path: str) -> None:
    """Unmount (every stacked copy) and delete the directory; a missing one is fine."""
    if not path:
        return
    for _ in range(8):
        try:
            syscalls.umount2(path, syscalls.MNT_DETACH)
        except OSError as exc:
            if exc.errno in (errno.EINVAL, errno.ENOENT):
                break
            raise
    _rmdir(path)


def _rmdir(path: str) -> None:
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("cannot remove the pod /dev/shm directory %s: %s", path, exc.strerror)


def collect_orphans(state_dir: Path, known: Iterable[str]) -> None:
    """Unmount and remove shm dirs of pods that have no record (e.g. after a crash)."""
    root = shm_root(state_dir)
    try:
        names = os.listdir(root)
    except FileNotFoundError:
        return
    known_ids = list(known)
    for name in names:
        if name in known_ids:
            continue
        log.info("removing leftover pod /dev/shm %s", root / name)
        try:
            remove(str(root / name))
        except OSError as exc:
            log.warning("cannot remove leftover pod /dev/shm %s: %s", root / name, exc)
