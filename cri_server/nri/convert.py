"""Pod and container records (and a container spec) as NRI's PodSandbox and Container."""
from __future__ import annotations

from typing import Any

from cri_server.containers import record as R
from cri_server.containers.record import ContainerRecord
from cri_server.sandboxes.record import SandboxRecord
from proto import api_pb2
from proto import nri_api_pb2 as nri

_STATES = {R.CREATING: nri.CONTAINER_UNKNOWN, R.CREATED: nri.CONTAINER_CREATED,
           R.RUNNING: nri.CONTAINER_RUNNING, R.EXITED: nri.CONTAINER_STOPPED}


def pod_sandbox(rec: SandboxRecord) -> nri.PodSandbox:
    cfg = rec.config
    meta = cfg.metadata
    return nri.PodSandbox(
        id=rec.id, name=meta.name, uid=meta.uid, namespace=meta.namespace,
        labels=dict(cfg.labels), annotations=dict(cfg.annotations),
        runtime_handler=rec.runtime_handler,
        linux=nri.LinuxPodSandbox(cgroup_parent=rec.cgroup_parent,
                                  cgroups_path=rec.cgroup_path),
        pid=rec.pause_pid, ips=[ip for ip in [rec.ip, *rec.additional_ips] if ip])


def resources(res: dict[str, Any]) -> nri.LinuxResources:
    """The spec's cgroup resources (0 / missing = not set) as NRI LinuxResources."""
    out = nri.LinuxResources()
    if res.get("memory_limit_in_bytes"):
        out.memory.limit.value = int(res["memory_limit_in_bytes"])
    if res.get("memory_swap_limit_in_bytes"):
        out.memory.swap.value = int(res["memory_swap_limit_in_bytes"])
    if res.get("memory_reservation_in_bytes"):
        out.memory.reservation.value = int(res["memory_reservation_in_bytes"])
    if res.get("memory_swappiness") is not None:
        out.memory.swappiness.value = int(res["memory_swappiness"])
    if res.get("cpu_realtime_runtime") is not None:
        out.cpu.realtime_runtime.value = int(res["cpu_realtime_runtime"])
    if res.get("cpu_realtime_period"):
        out.cpu.realtime_period.value = int(res["cpu_realtime_period"])
    if res.get("cpu_shares"):
        out.cpu.shares.value = int(res["cpu_shares"])
    if res.get("cpu_quota"):
        out.cpu.quota.value = int(res["cpu_quota"])
    if res.get("cpu_period"):
        out.cpu.period.value = int(res["cpu_period"])
    if res.get("cpuset_cpus"):
        out.cpu.cpus = str(res["cpuset_cpus"])
    if res.get("cpuset_mems"):
        out.cpu.mems = str(res["cpuset_mems"])
    if res.get("pids_limit"):
        out.pids.limit = int(res["pids_limit"])
    for h in res.get("hugepage_limits") or []:
        out.hugepage_limits.add(page_size=h["page_size"], limit=int(h["limit"]))
    out.unified.update(res.get("unified") or {})
    return out


def cri_resources(r: api_pb2.LinuxContainerResources) -> nri.LinuxResources:
    """CRI LinuxContainerResources (a pod's overhead or total) as NRI LinuxResources."""
    out = resources({
        "memory_limit_in_bytes": r.memory_limit_in_bytes,
        "memory_swap_limit_in_bytes": r.memory_swap_limit_in_bytes,
        "cpu_shares": r.cpu_shares, "cpu_quota": r.cpu_quota, "cpu_period": r.cpu_period,
        "cpuset_cpus": r.cpuset_cpus, "cpuset_mems": r.cpuset_mems,
        "hugepage_limits": [{"page_size": h.page_size, "limit": h.limit}
                            for h in r.hugepage_limits],
        "unified": dict(r.unified)})
    return out


def _mounts(spec: dict[str, Any]) -> list[nri.Mount]:
    out = []
    for m in spec.get("mounts") or []:
        options = list(m.get("options") or [])
        if m.get("readonly") and "ro" not in options:
            options.append("ro")
        if m.get("propagation"):
            options.append(str(m["propagation"]))
        out.append(nri.Mount(destination=m.get("destination") or "", type=m.get("type") or "",
                             source=m.get("source") or "", options=options))
    return out


def container(rec: ContainerRecord, spec: dict[str, Any] | None = None) -> nri.Container:
    """The container as NRI sees it; spec is the full spec while it is being created (the
    record keeps a copy of it afterwards)."""
    spec = spec if spec is not None else rec.spec
    process = spec.get("process") or {}
    cgroup = spec.get("cgroup") or {}
    linux = nri.LinuxContainer(
        namespaces=[nri.LinuxNamespace(type=n.get("type") or "", path=n.get("path") or "")
                    for n in spec.get("namespaces") or []],
        resources=resources(cgroup.get("resources") or rec.resources),
        cgroups_path=cgroup.get("path") or "")
    if process.get("oom_score_adj") is not None:
        linux.oom_score_adj.value = int(process["oom_score_adj"])
    msg = nri.Container(
        id=rec.id, pod_sandbox_id=rec.pod_id, name=rec.name,
        state=_STATES.get(rec.state, nri.CONTAINER_UNKNOWN),
        labels=dict(rec.labels), annotations=dict(rec.annotations),
        args=list(process.get("args") or []), env=list(process.get("env") or []),
        mounts=_mounts(spec), linux=linux, pid=rec.pid,
        rlimits=[nri.POSIXRlimit(type=r["type"], hard=int(r["hard"]), soft=int(r["soft"]))
                 for r in process.get("rlimits") or []],
        created_at=rec.created_at, started_at=rec.started_at, finished_at=rec.finished_at,
        exit_code=rec.exit_code, status_reason=rec.reason, status_message=rec.message,
        image=nri.Image(name=rec.image, digest=rec.image_ref.partition("@")[2],
                        config_digest=rec.image_id))
    return msg
