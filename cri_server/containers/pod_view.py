"""What the container code needs from a pod sandbox record.

Built from cri_server.sandboxes.record.SandboxRecord (`from_sandbox`); a plain
dataclass so the spec builder can be unit-tested without a pod.
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from typing import Any

from proto import api_pb2


@dataclass
class PodView:
    id: str
    state: str                              # "ready" | "notready" | "creating"
    config: api_pb2.PodSandboxConfig
    namespaces: dict[str, str]              # network/ipc/pid -> pod|node|container
    ns_paths: dict[str, str]                # net/ipc/uts/pid -> pinned namespace path
    hostname: str
    cgroup_driver: str
    cgroup_path: str                        # the pod's cgroup (filesystem path)
    pod_files: dict[str, str] = field(default_factory=dict)  # /etc/hosts -> host file
    shim_dir: str = ""
    netns_path: str = ""
    shm_path: str = ""                      # the pod's /dev/shm tmpfs ("" = none)
    userns: dict[str, Any] = field(default_factory=dict)  # the pod's own user namespace ({} = host)

    @property
    def host_network(self) -> bool:
        return self.namespaces.get("network") == "node"

    @property
    def log_directory(self) -> str:
        return self.config.log_directory


def from_sandbox(rec: Any) -> PodView:
    pod_dir = getattr(rec, "pod_dir", "") or ""
    files = {}
    if pod_dir:
        files = {"/etc/hostname": os.path.join(pod_dir, "hostname"),
                 "/etc/hosts": os.path.join(pod_dir, "hosts"),
                 "/etc/resolv.conf": os.path.join(pod_dir, "resolv.conf")}
    namespaces = dict(getattr(rec, "namespaces", {}) or {})
    hostname = getattr(rec, "hostname", "") or ""
    if namespaces.get("network") == "node" and not hostname:
        hostname = socket.gethostname()
    return PodView(
        id=rec.id, state=rec.state, config=rec.config, namespaces=namespaces,
        ns_paths=dict(getattr(rec, "ns_paths", {}) or {}), hostname=hostname,
        cgroup_driver=getattr(rec, "cgroup_driver", "cgroupfs") or "cgroupfs",
        cgroup_path=getattr(rec, "cgroup_path", "") or "",
        pod_files=files, shim_dir=getattr(rec, "shim_dir", "") or "",
        netns_path=getattr(rec, "netns_path", "") or "",
        shm_path=getattr(rec, "shm_path", "") or "",
        userns=dict(getattr(rec, "userns", {}) or {}))
