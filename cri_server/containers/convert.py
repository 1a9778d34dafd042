"""Container records -> CRI messages (Container, ContainerStatus, verbose info), filters."""
from __future__ import annotations

import json
from typing import Any, cast

from cri_server import resources
from cri_server.containers import record as R
from cri_server.containers.record import ContainerRecord
from proto import api_pb2

_STATES: dict[str, api_pb2.ContainerState] = {
    R.CREATING: api_pb2.CONTAINER_CREATED, R.CREATED: api_pb2.CONTAINER_CREATED,
    R.RUNNING: api_pb2.CONTAINER_RUNNING, R.EXITED: api_pb2.CONTAINER_EXITED,
    R.UNKNOWN: api_pb2.CONTAINER_UNKNOWN}


def cri_state(rec: ContainerRecord) -> api_pb2.ContainerState:
    return _STATES.get(rec.state, api_pb2.CONTAINER_UNKNOWN)


def image_spec(rec: ContainerRecord) -> api_pb2.ImageSpec:
    return api_pb2.ImageSpec(image=rec.image, annotations=rec.image_annotations,
                             user_specified_image=rec.user_specified_image)


def container(rec: ContainerRecord) -> api_pb2.Container:
    return api_pb2.Container(
        id=rec.id, pod_sandbox_id=rec.pod_id,
        metadata=api_pb2.ContainerMetadata(name=rec.name, attempt=rec.attempt),
        image=image_spec(rec), image_ref=rec.image_ref or rec.image_id, image_id=rec.image_id,
        state=cri_state(rec), created_at=rec.created_at, labels=rec.labels,
        annotations=rec.annotations)


def _mount(m: dict[str, Any]) -> api_pb2.Mount:
    return api_pb2.Mount(container_path=m.get("container_path", ""),
                         host_path=m.get("host_path", ""), readonly=bool(m.get("readonly")),
                         selinux_relabel=bool(m.get("selinux_relabel")),
                         propagation=cast(api_pb2.MountPropagation,
                                          int(m.get("propagation") or 0)),
                         recursive_read_only=bool(m.get("recursive_read_only")),
                         image=(api_pb2.ImageSpec(image=m["image"],
                                                  image_ref=m.get("image_ref", ""))
                                if m.get("image") else None),
                         image_sub_path=m.get("image_sub_path", ""))


def status(rec: ContainerRecord) -> api_pb2.ContainerStatus:
    st = api_pb2.ContainerStatus(
        id=rec.id, metadata=api_pb2.ContainerMetadata(name=rec.name, attempt=rec.attempt),
        state=cri_state(rec), created_at=rec.created_at, started_at=rec.started_at,
        finished_at=rec.finished_at, exit_code=rec.exit_code if rec.state == R.EXITED else 0,
        image=image_spec(rec), image_ref=rec.image_ref or rec.image_id, image_id=rec.image_id,
        reason=rec.reason if rec.state == R.EXITED else "",
        message=rec.message if rec.state == R.EXITED else "",
        labels=rec.labels, annotations=rec.annotations,
        mounts=[_mount(m) for m in rec.mounts], log_path=rec.log_path,
        resources=api_pb2.ContainerResources(linux=resources.to_proto(rec.resources)),
        stop_signal=cast(api_pb2.Signal, rec.stop_signal))
    if rec.user:
        st.user.linux.uid = int(rec.user.get("uid", 0))
        st.user.linux.gid = int(rec.user.get("gid", 0))
        st.user.linux.supplemental_groups.extend(int(g) for g in rec.user.get("groups", []))
    return st


def verbose_info(rec: ContainerRecord) -> dict[str, str]:
    userns = (rec.spec or {}).get("userns")
    info = {"sandboxID": rec.pod_id, "pid": rec.pid, "state": rec.state,
            "logPath": rec.log_path, "runtimeSpec": rec.spec,
            "user": rec.user, "imageId": rec.image_id,
            "cdiDevices": list((rec.spec or {}).get("cdi_devices") or []),
            "userNamespace": ({"mode": "pod", "uids": userns["uid_map"],
                               "gids": userns["gid_map"]} if userns else {"mode": "node"})}
    return {"info": json.dumps(info)}


def matches(rec: ContainerRecord, flt: api_pb2.ContainerFilter | None) -> bool:
    if flt is None:
        return True
    if flt.id and not rec.id.startswith(flt.id):
        return False
    if flt.pod_sandbox_id and not rec.pod_id.startswith(flt.pod_sandbox_id):
        return False
    if flt.HasField("state") and cri_state(rec) != flt.state.state:
        return False
    return all(rec.labels.get(k) == v for k, v in flt.label_selector.items())
