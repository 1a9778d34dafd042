"""The pod-level cgroup: its path for the cgroupfs and systemd drivers, creating and removing it.

Naming comes from runtime.cgroups.naming. kubelet passes the pod's own cgroup as
linux.cgroup_parent (it creates and removes it itself); without one (crictl) the
pod gets a cgroup of its own under the configured cgroup_parent, named like
kubelet names pods but by sandbox id (pod<id> / <parent>-pod<id>.slice), which pycri owns and
removes again together with any empty parents up to the configured parent.
The systemd driver makes the pod slice and the pause-holder's scope systemd units
(cri_server.systemd_units) and fails with FAILED_PRECONDITION where systemd is not PID 1.
"""
from __future__ import annotations

import os
import posixpath
import threading
from dataclasses import dataclass
from typing import Any

from cri_server import systemd_units
from proto import api_pb2
from pycri_common.errors import FailedPrecondition, InvalidArgument
from runtime import cgroups
from runtime.cgroups import mode, naming
from runtime.cgroups.fsutil import remove_tree

_lock = threading.Lock()  # creating vs. pruning parents of concurrently made pods


@dataclass(frozen=True)
class PodCgroup:
    driver: str
    parent: str      # as the request/config named it (path or slice)
    path: str        # filesystem path below each hierarchy's root
    owned: bool      # pycri created it and removes it
    prune_to: str    # owned: empty parents are removed up to this path (inclusive)


def plan(driver: str, request_parent: str, config_parent: str, pod_id: str) -> PodCgroup:
    """The pod cgroup: kubelet's (request_parent) or an owned pod<sandbox id> one under the
    configured parent (per sandbox, so two attempts of one pod never share it)."""
    try:
        if request_parent:
            return PodCgroup(driver, request_parent,
                             naming.pod_cgroup_path(driver, request_parent), False, "")
        if driver == "systemd":
            parent_slice = _as_slice(config_parent)
            slice_name = naming.systemd_pod_slice(parent_slice, pod_id)
            path = naming.expand_slice(slice_name)
            return PodCgroup(driver, parent_slice, path, True, _top(path))
        parent = naming.cgroupfs_path(config_parent)
        path = naming.cgroupfs_path(parent, f"pod{pod_id}")
        return PodCgroup(driver, parent, path, True, _top(path))
    except InvalidArgument as exc:
        raise InvalidArgument(str(exc)) from None


def _as_slice(parent: str) -> str:
    """The configured parent as a slice name: '/kubepods' -> 'kubepods.slice' (dashes inside a
    path component would nest slices, so they become underscores)."""
    if parent.endswith(".slice"):
        return parent
    parts = [p.replace("-", "_") for p in naming.cgroupfs_path(parent).strip("/").split("/") if p]
    return "-".join(parts) + ".slice" if parts else "-.slice"


def _top(path: str) -> str:
    """'/a/b/c' -> '/a': the highest directory pycri may prune when it is empty."""
    parts = [p for p in path.split("/") if p]
    return "/" + parts[0] if len(parts) > 1 else ""


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


def pod_resources(linux: api_pb2.LinuxPodSandboxConfig) -> dict[str, Any]:
    """The pod's resources plus its overhead, in ContainerSpec names (empty when none given)."""
    res: dict[str, Any] = {}
    r, o = linux.resources, linux.overhead
    if linux.HasField("resources"):
        res = {"cpu_shares": r.cpu_shares, "cpu_quota": r.cpu_quota, "cpu_period": r.cpu_period,
               "cpuset_cpus": r.cpuset_cpus, "cpuset_mems": r.cpuset_mems,
               "memory_limit_in_bytes": r.memory_limit_in_bytes,
               "memory_swap_limit_in_bytes": r.memory_swap_limit_in_bytes,
               "hugepage_limits": [{"page_size": h.page_size, "limit": h.limit}
                                   for h in r.hugepage_limits],
               "unified": dict(r.unified)}
    if res and linux.HasField("overhead"):
        # limits that are set grow by the overhead (kubelet sizes pod cgroups the same way)
        for key in ("cpu_shares", "memory_limit_in_bytes"):
            if res[key] > 0:
                res[key] += getattr(o, key)
        if res["cpu_quota"] > 0 and o.cpu_quota > 0 and o.cpu_period in (0, res["cpu_period"]):
            res["cpu_quota"] += o.cpu_quota
    return {k: v for k, v in res.items() if v}


def create(cg: PodCgroup, resources: dict[str, Any] | None = None) -> None:
    """Creates the pod cgroup in every hierarchy; resources only for an owned one (kubelet
    configures the pod cgroups it names itself). systemd driver: the slice unit first."""
    with _lock:
        try:
            if cg.driver == "systemd":
                systemd_units.start_pod_slice(cg.path, cg.owned, resources)
            cgroups.create_cgroup(cg.path, resources if cg.owned else None)
        except InvalidArgument as exc:
            raise InvalidArgument(f"pod cgroup {cg.path}: {exc}") from None
        except OSError as exc:
            raise FailedPrecondition(f"cannot create the pod cgroup {cg.path}: {exc}") from None


def pause_path(cg: PodCgroup, pod_id: str) -> str:
    """The pause-holder's cgroup; under systemd always its own scope (v1 and v2)."""
    if cg.driver == "systemd":
        return posixpath.join(cg.path, f"{naming.SCOPE_PREFIX}-{pod_id}.scope")
    return naming.pause_cgroup_path(cg.path, cg.driver, pod_id, mode.detect_mode())


def start_pause_scope(cg: PodCgroup, pod_id: str, pause_pid: int) -> None:
    """systemd driver: the pause-holder's own scope (the shim leaves it where it is)."""
    if cg.driver == "systemd" and cg.path and pause_pid > 0:
        systemd_units.start_pause_scope(cg.path, pause_path(cg, pod_id), pod_id, pause_pid)


def update(cg: PodCgroup, resources: dict[str, Any]) -> None:
    if cg.driver == "systemd":
        systemd_units.update_pod_slice(cg.path, resources)
    cgroups.apply_resources(cg.path, resources)


def remove(cg: PodCgroup, pod_id: str = "", timeout: float = 5.0) -> None:
    """Removes an owned pod cgroup (waiting for exiting processes) and its empty parents.
    systemd driver: the pause-holder's scope and an owned slice are stopped through systemd."""
    if cg.driver == "systemd" and cg.path:
        with _lock:
            systemd_units.stop_pod(cg.path, pause_path(cg, pod_id) if pod_id else cg.path,
                                   cg.owned, cg.prune_to)
    if not cg.owned:
        return
    with _lock:
        for root in hierarchy_roots():
            remove_tree(root + cg.path, timeout)  # kills what is still inside
            path = posixpath.dirname(cg.path)
            while cg.prune_to and path != "/" and (path == cg.prune_to
                                                   or path.startswith(cg.prune_to + "/")):
                try:
                    os.rmdir(root + path)
                except OSError:
                    break
                path = posixpath.dirname(path)


