"""Container and sandbox records -> the stats sources (what a reading needs to know).

Duck-typed on cri_server.containers.record.ContainerRecord and
cri_server.sandboxes.record.SandboxRecord so the stats code does not depend on
the managers: the container's cgroup and writable layer come from its spec, the
pod's cgroup and pause-holder pid from the sandbox record.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cri_server.stats.sources import ContainerSource, PodSource
from runtime import cgroups

# Container record states whose cgroup is live (the init waits in it from create on).
LIVE_STATES = ("created", "running")


def container_cgroup_path(rec: Any) -> str:
    cg = (rec.spec or {}).get("cgroup")
    if not cg:
        return ""
    return cgroups.spec_cgroup_path(cg)


def container_source(rec: Any) -> ContainerSource:
    spec = rec.spec or {}
    resources = rec.resources or {}
    return ContainerSource(
        id=rec.id, pod_id=rec.pod_id, name=rec.name, attempt=rec.attempt,
        labels=rec.labels, annotations=rec.annotations,   # read only
        cgroup_path=container_cgroup_path(rec),
        upper_dir=str((spec.get("rootfs") or {}).get("upper") or ""),
        image=rec.image, created_at=rec.created_at, started_at=rec.started_at,
        memory_limit=max(0, int(resources.get("memory_limit_in_bytes") or 0)))


def pod_source(rec: Any, containers: list[ContainerSource]) -> PodSource:
    meta = rec.config.metadata
    ready = rec.state == "ready"
    return PodSource(
        id=rec.id, name=meta.name, uid=meta.uid, namespace=meta.namespace,
        attempt=meta.attempt, labels=rec.config.labels,   # read only (protobuf maps)
        annotations=rec.config.annotations, cgroup_path=rec.cgroup_path,
        # a stopped pod's pause-holder is gone and its pid may belong to someone else now
        pause_pid=rec.pause_pid if ready else 0,
        host_network=rec.host_network, containers=containers)


def labels_match(labels: Mapping[str, str], selector: Any) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())
