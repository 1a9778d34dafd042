"""Container lifecycle events -> ContainerEventResponse on the daemon's event bus."""
from __future__ import annotations

import time
from typing import Any

from cri_server.containers import convert
from cri_server.containers.record import ContainerRecord
from proto import api_pb2


def make_sink(bus: Any, sandboxes: Any) -> Any:
    """A ContainerManager event sink that publishes to `bus` (cri_server.events.EventBus)."""

    def sink(event_type: int, rec: ContainerRecord) -> None:
        event = api_pb2.ContainerEventResponse(
            container_id=rec.id, container_event_type=event_type, created_at=time.time_ns(),
            containers_statuses=[convert.status(rec)])
        pod_status = _pod_status(sandboxes, rec.pod_id)
        if pod_status is not None:
            event.pod_sandbox_status.CopyFrom(pod_status)
        bus.publish(event)

    return sink


def _pod_status(sandboxes: Any, pod_id: str) -> api_pb2.PodSandboxStatus | None:
    if sandboxes is None:
        return None
    try:
        from cri_server.sandboxes.views import pod_sandbox_status
        rec = sandboxes.get(pod_id)
        return pod_sandbox_status(rec) if rec is not None else None
    except Exception:  # noqa: BLE001 - the pod may be gone already
        return None
