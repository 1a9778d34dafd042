"""Sandbox records as CRI messages: PodSandbox, PodSandboxStatus, verbose info; list filters."""
from __future__ import annotations

import json
from typing import Any

from google.protobuf import json_format

from cri_server.sandboxes.record import READY, SandboxRecord
from proto import api_pb2

_MODES = {"pod": api_pb2.POD, "container": api_pb2.CONTAINER, "node": api_pb2.NODE}


def cri_state(rec: SandboxRecord) -> api_pb2.PodSandboxState:
    return api_pb2.SANDBOX_READY if rec.state == READY else api_pb2.SANDBOX_NOTREADY


def pod_sandbox(rec: SandboxRecord) -> api_pb2.PodSandbox:
    cfg = rec.config
    return api_pb2.PodSandbox(id=rec.id, metadata=cfg.metadata, state=cri_state(rec),
                              created_at=rec.created_at, labels=cfg.labels,
                              annotations=cfg.annotations, runtime_handler=rec.runtime_handler)


def list_item_bytes(rec: SandboxRecord) -> int:
    """What the pod takes in a ListPodSandbox response (cri_server.list_budget)."""
    return pod_sandbox(rec).ByteSize()


def pod_sandbox_status(rec: SandboxRecord) -> api_pb2.PodSandboxStatus:
    cfg = rec.config
    network = api_pb2.PodSandboxNetworkStatus(
        ip=rec.ip, additional_ips=[api_pb2.PodIP(ip=ip) for ip in rec.additional_ips])
    options = api_pb2.NamespaceOption(network=_MODES[rec.namespaces["network"]],
                                      pid=_MODES[rec.namespaces["pid"]],
                                      ipc=_MODES[rec.namespaces["ipc"]],
                                      userns_options=userns_options(rec.userns))
    return api_pb2.PodSandboxStatus(
        id=rec.id, metadata=cfg.metadata, state=cri_state(rec), created_at=rec.created_at,
        network=network,
        linux=api_pb2.LinuxPodSandboxStatus(namespaces=api_pb2.Namespace(options=options)),
        labels=cfg.labels, annotations=cfg.annotations, runtime_handler=rec.runtime_handler)


def userns_options(userns: dict[str, Any]) -> api_pb2.UserNamespace:
    """The CRI UserNamespace of a record's `userns` ({} = the host's: NODE)."""
    if not userns:
        return api_pb2.UserNamespace(mode=api_pb2.NODE)
    return api_pb2.UserNamespace(
        mode=api_pb2.POD,
        uids=[api_pb2.IDMapping(container_id=c, host_id=h, length=n) for c, h, n in userns["uids"]],
        gids=[api_pb2.IDMapping(container_id=c, host_id=h, length=n) for c, h, n in userns["gids"]])


def verbose_info(rec: SandboxRecord, cni_result: dict[str, Any] | None) -> dict[str, str]:
    """The "info" map of a verbose PodSandboxStatus (crictl inspectp prints it)."""
    info = {
        "id": rec.id,
        "state": rec.state,
        "pid": rec.pause_pid,
        "shimPid": rec.shim_pid,   # the monitor serving the pod (runtime.shim.monitor)
        "netnsPath": rec.netns_path,
        "namespacePaths": rec.ns_paths,
        "pidMode": rec.pid_mode,
        "hostname": rec.hostname,
        "podDir": rec.pod_dir,
        "shimDir": rec.shim_dir,
        "cgroupDriver": rec.cgroup_driver,
        "cgroupParent": rec.cgroup_parent,
        "cgroupPath": rec.cgroup_path,
        "runtimeHandler": rec.runtime_handler,
        "sysctls": rec.sysctls,
        "userNamespace": rec.userns or {"mode": "node"},
        "portMappings": rec.port_mappings,
        "cniResult": cni_result,
        "config": json_format.MessageToDict(rec.config),
    }
    if rec.adopt_error:
        info["adoptionError"] = rec.adopt_error
    return {"info": json.dumps(info)}


def matches(rec: SandboxRecord, flt: api_pb2.PodSandboxFilter | None) -> bool:
    if flt is None:
        return True
    if flt.id and not rec.id.startswith(flt.id):
        return False
    if flt.HasField("state") and cri_state(rec) != flt.state.state:
        return False
    labels = rec.config.labels
    return all(labels.get(k) == v for k, v in flt.label_selector.items())
