"""The pod-level cgroup: its path for the cgroupfs and systemd drivers, creating and removing it.

Naming comes from runtime.cgroups.naming. kubelet passes the pod's own cgroup as
linux.cgroup_parent (it creates and removes it itself); without one (crictl) the
pod gets a cgroup of its own under the configured cgroup_parent, named like
kubelet would name it (pod<uid> / <parent>-pod<uid>.slice), which pycri owns and
removes again together with any empty parents up to the configured parent.
No systemd on these hosts: the systemd driver manages the same paths directly.
"""
from __future__ import annotations

import errno
import os
import posixpath
import threading
import time
from dataclasses import dataclass

from runtime.cgroups import mode, naming
from runtime.spec_errors import InvalidArgument as SpecInvalidArgument
from cri_server.errors import InvalidArgument

_lock = threading.Lock()  # creating vs. pruning parents of concurrently made pods


@dataclass(frozen=True)
class PodCgroup:
    driver: str
    parent: str      # as the request/config named it (path or slice)
    path: str        # filesystem path below each hierarchy's root
    owned: bool      # pycri created it and removes it
    prune_to: str    # owned: empty parents are removed up to this path (inclusive)


def plan(driver: str, request_parent: str, config_parent: str, pod_uid: str) -> PodCgroup:
    try:
        if request_parent:
            return PodCgroup(driver, request_parent,
                             naming.pod_cgroup_path(driver, request_parent), False, "")
        if driver == "systemd":
            parent_slice = config_parent if config_parent.endswith(".slice") else \
                naming.cgroupfs_path(config_parent).strip("/").replace("/", "-") + ".slice"
            if parent_slice == ".slice":
                parent_slice = "-.slice"
            slice_name = naming.systemd_pod_slice(parent_slice, pod_uid)
            return PodCgroup(driver, parent_slice, naming.expand_slice(slice_name), True,
                             naming.expand_slice(parent_slice))
        parent = naming.cgroupfs_path(config_parent)
        return PodCgroup(driver, parent, naming.cgroupfs_path(parent, f"pod{pod_uid}"), True,
                         parent)
    except SpecInvalidArgument as exc:
        raise InvalidArgument(str(exc)) from None


def hierarchy_roots() -> list[str]:
    """Every mounted cgroup hierarchy root (v1 controllers deduplicated, plus cgroup2)."""
    roots: list[str] = []
    for root in mode.v1_hierarchies().values():
        if root not in roots:
            roots.append(root)
    unified = mode.unified_root()
    if unified and unified not in roots:
        roots.append(unified)
    return roots


def create(cg: PodCgroup) -> None:
    """mkdir -p the pod cgroup in every hierarchy (cpuset v1 children need cpus/mems copied)."""
    with _lock:
        for root in hierarchy_roots():
            target = root + cg.path
            _mkdirs(root, target)


def _mkdirs(root: str, target: str) -> None:
    missing = []
    path = target
    while path != root and not os.path.isdir(path):
        missing.append(path)
        path = os.path.dirname(path)
    for p in reversed(missing):
        try:
            os.mkdir(p, 0o755)
        except FileExistsError:
            continue
        _inherit_cpuset(p)


def _inherit_cpuset(path: str) -> None:
    for name in ("cpuset.cpus", "cpuset.mems"):
        mine = os.path.join(path, name)
        parent = os.path.join(os.path.dirname(path), name)
        if not os.path.exists(mine) or not os.path.exists(parent):
            continue
        try:
            with open(mine) as f:
                if f.read().strip():
                    continue
            with open(parent) as f:
                value = f.read().strip()
            with open(mine, "w") as f:
                f.write(value)
        except OSError:
            pass


def remove(cg: PodCgroup, timeout: float = 5.0) -> None:
    """Removes an owned pod cgroup (waiting for exiting processes) and its empty parents."""
    if not cg.owned:
        return
    with _lock:
        for root in hierarchy_roots():
            _rmdir_tree(root + cg.path, timeout)
            path = posixpath.dirname(cg.path)
            while cg.prune_to and path != "/" and (path == cg.prune_to
                                                   or path.startswith(cg.prune_to + "/")):
                try:
                    os.rmdir(root + path)
                except OSError:
                    break
                path = posixpath.dirname(path)


def _rmdir_tree(path: str, timeout: float) -> None:
    """rmdir children first (containers' cgroups left behind), then path itself."""
    if not os.path.isdir(path):
        return
    for entry in os.scandir(path):
        if entry.is_dir(follow_symlinks=False):
            _rmdir_tree(entry.path, timeout)
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                raise
            time.sleep(0.02)
