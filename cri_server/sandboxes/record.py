"""The persistent record of one pod sandbox (kind "sandbox" in cri_server.store).

The record is inserted (state CREATING) before RunPodSandbox causes any side
effect, and every path it will touch is decided up front and stored in it, so
a crash at any point leaves enough on disk to finish or undo the work: a
CREATING record found at start-up is rolled back (see recovery).
"""
from __future__ import annotations

import base64
import dataclasses
import hashlib
from dataclasses import dataclass, field
from typing import Any

from proto import api_pb2

KIND = "sandbox"

CREATING = "creating"   # RunPodSandbox in progress (or interrupted by a crash)
READY = "ready"         # shim and pause-holder running, network set up
NOTREADY = "notready"   # stopped, or its shim is gone


@dataclass
class SandboxRecord:
    id: str
    name_key: str
    created_at: int                      # ns since the epoch
    state: str
    phase: str                           # the last RunPodSandbox step that completed
    config_b64: str                      # PodSandboxConfig, serialized
    request_digest: str                  # identifies a kubelet retry of the same request
    runtime_handler: str
    namespaces: dict[str, str]           # network/ipc/pid -> pod|node|container
    hostname: str
    sysctls: dict[str, str]
    port_mappings: list[dict[str, Any]]
    pod_dir: str                         # hostname, hosts, resolv.conf
    shim_dir: str
    ns_dir: str
    netns_path: str                      # "" for host-network pods
    cgroup_driver: str
    cgroup_parent: str
    cgroup_path: str
    cgroup_owned: bool = False           # created by pycri (removed with the pod)
    cgroup_prune_to: str = ""            # owned: empty parents removed up to this path
    ip: str = ""
    additional_ips: list[str] = field(default_factory=list)
    shim_pid: int = 0
    pause_pid: int = 0
    ns_paths: dict[str, str] = field(default_factory=dict)   # net/ipc/uts/pid -> pinned path
    network_ready: bool = False          # CNI ADD done and not torn down yet
    shm_path: str = ""                   # the pod's /dev/shm tmpfs ("" for host IPC)
    # the pod's own user namespace: {"mode": "pod", "uids": [[0, host, n]], "gids": [...]};
    # {} = the host's (validate.user_namespace)
    userns: dict[str, Any] = field(default_factory=dict)
    # why no successor monitor could take the pod back after its monitor died ("" : none
    # failed, or the last one succeeded); shown in PodSandboxStatus's verbose info
    adopt_error: str = ""
    _config: Any = field(default=None, repr=False, compare=False)

    # -- config --------------------------------------------------------------
    @property
    def config(self) -> api_pb2.PodSandboxConfig:
        if self._config is None:
            cfg = api_pb2.PodSandboxConfig()
            cfg.ParseFromString(base64.b64decode(self.config_b64))
            self._config = cfg
        return self._config

    @property
    def metadata(self) -> api_pb2.PodSandboxMetadata:
        return self.config.metadata

    @property
    def host_network(self) -> bool:
        return self.namespaces.get("network") == "node"

    @property
    def pid_mode(self) -> str:
        return self.namespaces.get("pid", "container")

    # -- (de)serialisation ---------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.pop("_config", None)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SandboxRecord:
        known = {f.name for f in dataclasses.fields(cls)} - {"_config"}
        return cls(**{k: v for k, v in data.items() if k in known})


def encode_config(config: api_pb2.PodSandboxConfig) -> str:
    return base64.b64encode(config.SerializeToString(deterministic=True)).decode()


def request_digest(request: api_pb2.RunPodSandboxRequest) -> str:
    return hashlib.sha256(request.SerializeToString(deterministic=True)).hexdigest()
