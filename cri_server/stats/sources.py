"""What the stats code needs to know about a container or a pod (filled from records)."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass
class ContainerSource:
    id: str
    pod_id: str
    name: str
    attempt: int
    labels: Mapping[str, str]       # read only
    annotations: Mapping[str, str]
    cgroup_path: str          # "" when the container has no cgroup (yet)
    upper_dir: str            # writable layer
    image: str = ""
    created_at: int = 0       # ns since the epoch
    started_at: int = 0
    memory_limit: int = 0     # bytes; 0 = none


@dataclass
class PodSource:
    id: str
    name: str
    uid: str
    namespace: str
    attempt: int
    labels: Mapping[str, str]       # read only
    annotations: Mapping[str, str]
    cgroup_path: str
    pause_pid: int            # its /proc/<pid>/net/dev shows the pod's interfaces
    host_network: bool = False
    containers: list[ContainerSource] = field(default_factory=list)
