"""cgroups for pods and containers: v1 (and hybrid) and v2; cgroupfs and systemd drivers.

Who creates and removes which cgroup: contract 5 of docs/architecture.md. API:
- naming: pod_cgroup_path(driver, cgroup_parent), container_cgroup_path(driver, pod_parent, id),
  spec_cgroup_path(spec JSON's "cgroup") (the path to pass to the calls below)
- create_cgroup(path, resources) / remove_cgroup(path) / attach(path, pid)
- apply_resources(path, resources)   (UpdateContainerResources)
- read_stats(path) -> {"cpu_usage_ns", "memory_usage_bytes", "memory_working_set_bytes",
  "memory_rss_bytes", "page_faults", "major_page_faults", "swap_usage_bytes", "pids_current",
  "oom_kill_count", "memory_failcnt"}; Cgroup.stat_files(parts)/parse_stats(texts, parts)
  split a reading of some STAT_PARTS into the files it needs and their parsing
- oom_kill_count(path) (OOMKilled detection: compare before/after the container ran)
Resources use the ContainerSpec names (container_spec.py).
"""
from __future__ import annotations

from typing import Any

from runtime.cgroups.manager import STAT_PARTS, Cgroup, V1Cgroup, V2Cgroup, open_cgroup
from runtime.cgroups.mode import detect_mode
from runtime.cgroups.naming import (
    container_cgroup_path,
    expand_slice,
    pod_cgroup_path,
    spec_cgroup_path,
)

__all__ = [
    "STAT_PARTS", "Cgroup", "V1Cgroup", "V2Cgroup", "apply_resources", "attach", "container_cgroup_path",
    "create_cgroup", "detect_mode", "expand_slice", "oom_kill_count", "open_cgroup",
    "pod_cgroup_path", "read_stats", "remove_cgroup", "spec_cgroup_path",
]


def create_cgroup(path: str, resources: dict[str, Any] | None = None) -> Cgroup:
    cg = open_cgroup(path)
    cg.create(resources)
    return cg


def remove_cgroup(path: str, timeout: float = 2.0) -> None:
    """rmdir the cgroup (and children) everywhere; processes still inside are SIGKILLed."""
    open_cgroup(path).remove(timeout)


def attach(path: str, pid: int) -> None:
    open_cgroup(path).attach(pid)


def apply_resources(path: str, resources: dict[str, Any]) -> None:
    open_cgroup(path).apply_resources(resources)


def read_stats(path: str) -> dict[str, int]:
    return open_cgroup(path).stats()


def oom_kill_count(path: str) -> int:
    return open_cgroup(path).oom_kill_count()
