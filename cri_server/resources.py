"""LinuxContainerResources <-> the ContainerSpec's cgroup "resources" dict."""
from __future__ import annotations

from typing import Any

from cri_server import host_features
from proto import api_pb2
from pycri_common.errors import InvalidArgument
from pycri_common.text import shorten


def to_dict(r: api_pb2.LinuxContainerResources) -> dict[str, Any]:
    for name in ("cpu_period", "cpu_quota", "cpu_shares", "memory_limit_in_bytes"):
        if getattr(r, name) < 0 and not (name == "cpu_quota" and r.cpu_quota == -1):
            raise InvalidArgument(f"resources.{name} must not be negative, got {getattr(r, name)}")
    if not -1000 <= r.oom_score_adj <= 1000:
        raise InvalidArgument(f"resources.oom_score_adj must be in [-1000, 1000], got "
                              f"{r.oom_score_adj}")
    check_page_sizes(r)
    return {
        "cpu_period": r.cpu_period, "cpu_quota": r.cpu_quota, "cpu_shares": r.cpu_shares,
        "memory_limit_in_bytes": r.memory_limit_in_bytes,
        "memory_swap_limit_in_bytes": r.memory_swap_limit_in_bytes,
        "oom_score_adj": r.oom_score_adj,
        "cpuset_cpus": r.cpuset_cpus or None, "cpuset_mems": r.cpuset_mems or None,
        "hugepage_limits": [{"page_size": h.page_size, "limit": int(h.limit)}
                            for h in r.hugepage_limits],
        "unified": dict(r.unified),
    }


def check_page_sizes(r: api_pb2.LinuxContainerResources) -> None:
    """Only the page sizes this host's kernel offers: the size becomes part of a cgroup file
    name (hugetlb.<size>.max), so anything else must not get near the file system."""
    offered = host_features.hugepage_sizes()
    for h in r.hugepage_limits:
        if h.page_size not in offered:
            raise InvalidArgument(
                f"resources.hugepage_limits: page size {shorten(h.page_size)} is not offered by "
                f"this host's kernel (offered: {', '.join(offered) or 'none'})")


def check(name: str, r: api_pb2.LinuxContainerResources) -> None:
    """Validates resources given for a pod ("resources" or "overhead"); the error names the
    field."""
    try:
        to_dict(r)
    except InvalidArgument as exc:
        raise InvalidArgument(f"{name}: {exc}") from None


def to_proto(d: dict[str, Any]) -> api_pb2.LinuxContainerResources:
    return api_pb2.LinuxContainerResources(
        cpu_period=d.get("cpu_period") or 0, cpu_quota=d.get("cpu_quota") or 0,
        cpu_shares=d.get("cpu_shares") or 0,
        memory_limit_in_bytes=d.get("memory_limit_in_bytes") or 0,
        memory_swap_limit_in_bytes=d.get("memory_swap_limit_in_bytes") or 0,
        oom_score_adj=d.get("oom_score_adj") or 0,
        cpuset_cpus=d.get("cpuset_cpus") or "", cpuset_mems=d.get("cpuset_mems") or "",
        hugepage_limits=[api_pb2.HugepageLimit(page_size=h["page_size"], limit=h["limit"])
                         for h in d.get("hugepage_limits") or []],
        unified=d.get("unified") or {})
