"""Container lifecycle events -> ContainerEventResponse on the daemon's event bus.

Each event carries the pod's PodSandboxStatus and the statuses of every container of the
pod (kubelet's evented PLEG rebuilds the pod's status from them, as containerd sends them);
a deleted container is no longer among them. Events of one container are published in
lifecycle order (cri_server.events.LifecycleOrder), whichever thread reported them. Pods
have events of their own (make_pod_sink): the pod's id as container id, as containerd does.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol, cast

from cri_server.containers import convert
from cri_server.containers import record as R
from cri_server.containers.record import ContainerRecord
from cri_server.events import LifecycleOrder
from cri_server.sandboxes.record import SandboxRecord
from proto import api_pb2


class Bus(Protocol):
    """cri_server.events.EventBus."""

    def publish(self, event: api_pb2.ContainerEventResponse) -> None: ...


class Pods(Protocol):
    """cri_server.sandboxes.SandboxManager."""

    def get(self, pod_id: str) -> SandboxRecord: ...


class Containers(Protocol):
    """cri_server.containers.manager.ContainerManager."""

    def in_pod(self, pod_id: str) -> list[ContainerRecord]: ...


def make_sink(bus: Bus, sandboxes: Pods,
              containers: Containers) -> Callable[[int, ContainerRecord], None]:
    """A ContainerManager event sink that publishes to `bus`; `containers` (the manager
    itself) gives the statuses of the pod's containers."""
    order = LifecycleOrder()
    lock = threading.Lock()

    def sink(event_type: int, rec: ContainerRecord) -> None:
        # the payload is made before taking the lock: no call into the managers under it
        others = _other_containers(containers, rec)
        with_it = _statuses([*others, rec])
        without_it = _statuses(others)
        pod_status = _pod_status(sandboxes, rec.pod_id)
        with lock:
            for step in order.plan(rec.id, event_type, started=bool(rec.started_at)):
                deleted = step == api_pb2.CONTAINER_DELETED_EVENT
                event = api_pb2.ContainerEventResponse(
                    container_id=rec.id,
                    container_event_type=cast(api_pb2.ContainerEventType, step),
                    created_at=time.time_ns(),
                    containers_statuses=without_it if deleted else with_it)
                if pod_status is not None:
                    event.pod_sandbox_status.CopyFrom(pod_status)
                bus.publish(event)

    return sink


def make_pod_sink(bus: Bus, containers: Containers) -> Callable[[int, SandboxRecord], None]:
    """A SandboxManager event sink: pod lifecycle events with the pod's id as container id
    (containerd does the same; kubelet's evented PLEG watches them), the pod's status and
    the statuses of its containers."""
    order = LifecycleOrder()
    lock = threading.Lock()

    def sink(event_type: int, pod: SandboxRecord) -> None:
        from cri_server.sandboxes.views import pod_sandbox_status
        try:
            recs = [r for r in containers.in_pod(pod.id) if r.state != R.CREATING]
        except Exception:  # noqa: BLE001 - an event must still go out
            recs = []
        statuses = _statuses(recs)
        pod_status = pod_sandbox_status(pod)
        with lock:
            for step in order.plan(pod.id, event_type, started=True):
                bus.publish(api_pb2.ContainerEventResponse(
                    container_id=pod.id,
                    container_event_type=cast(api_pb2.ContainerEventType, step),
                    created_at=time.time_ns(), pod_sandbox_status=pod_status,
                    containers_statuses=statuses))

    return sink


def _other_containers(manager: Containers, rec: ContainerRecord) -> list[ContainerRecord]:
    """The pod's other containers (none being created)."""
    try:
        return [r for r in manager.in_pod(rec.pod_id) if r.state != R.CREATING and r.id != rec.id]
    except Exception:  # noqa: BLE001 - an event must still go out
        return []


def _statuses(recs: list[ContainerRecord]) -> list[api_pb2.ContainerStatus]:
    return [convert.status(r) for r in sorted(recs, key=lambda r: r.created_at)]


def _pod_status(sandboxes: Pods, pod_id: str) -> api_pb2.PodSandboxStatus | None:
    try:
        from cri_server.sandboxes.views import pod_sandbox_status
        rec = sandboxes.get(pod_id)
        return pod_sandbox_status(rec) if rec is not None else None
    except Exception:  # noqa: BLE001 - the pod may be gone already
        return None
