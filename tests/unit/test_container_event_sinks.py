"""The event sinks: payload (pod status, every container's status) and lifecycle order."""
from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from cri_server.containers.events import make_pod_sink, make_sink
from cri_server.containers.record import ContainerRecord
from proto import api_pb2


class _Bus:
    def __init__(self) -> None:
        self.events: list[api_pb2.ContainerEventResponse] = []

    def publish(self, event: api_pb2.ContainerEventResponse) -> None:
        self.events.append(event)


class _Containers:
    def __init__(self, recs: list[ContainerRecord]) -> None:
        self.recs = recs

    def in_pod(self, pod_id: str) -> list[ContainerRecord]:
        return [r for r in self.recs if r.pod_id == pod_id]


def _pod(state: str = "ready") -> Any:
    config = api_pb2.PodSandboxConfig(metadata=api_pb2.PodSandboxMetadata(name="p", uid="u",
                                                                          namespace="ns"))
    return SimpleNamespace(id="pod1", config=config, state=state, created_at=1, ip="10.0.0.2",
                           additional_ips=[], runtime_handler="",
                           namespaces={"network": "pod", "pid": "container", "ipc": "pod"},
                           userns={})


class _Sandboxes:
    def get(self, pod_id: str) -> Any:
        return _pod()


def _rec(cid: str, state: str, created_at: int, started_at: int = 0) -> ContainerRecord:
    return ContainerRecord(id=cid, pod_id="pod1", name=cid, attempt=0, image="img",
                           state=state, created_at=created_at, started_at=started_at)


def test_container_events_carry_every_container_and_keep_lifecycle_order() -> None:
    bus = _Bus()
    neighbour = _rec("n", "running", 1, 1)
    quick = _rec("q", "created", 2)
    manager = _Containers([neighbour, quick])
    sink = make_sink(bus, _Sandboxes(), manager)
    sink(api_pb2.CONTAINER_CREATED_EVENT, quick)
    quick.state, quick.started_at = "exited", 5       # exited before STARTED was reported
    sink(api_pb2.CONTAINER_STOPPED_EVENT, quick)
    sink(api_pb2.CONTAINER_STARTED_EVENT, quick)      # late: dropped
    manager.recs.remove(quick)
    sink(api_pb2.CONTAINER_DELETED_EVENT, quick)
    assert [e.container_event_type for e in bus.events] == [
        api_pb2.CONTAINER_CREATED_EVENT, api_pb2.CONTAINER_STARTED_EVENT,
        api_pb2.CONTAINER_STOPPED_EVENT, api_pb2.CONTAINER_DELETED_EVENT]
    assert all(e.container_id == "q" and e.pod_sandbox_status.id == "pod1" for e in bus.events)
    assert [s.id for s in bus.events[0].containers_statuses] == ["n", "q"]
    assert [s.id for s in bus.events[3].containers_statuses] == ["n"]


def test_pod_events_use_the_pod_id() -> None:
    bus = _Bus()
    sink = make_pod_sink(bus, _Containers([_rec("c", "running", 1, 1)]))
    sink(api_pb2.CONTAINER_CREATED_EVENT, _pod())
    sink(api_pb2.CONTAINER_STARTED_EVENT, _pod())
    sink(api_pb2.CONTAINER_STOPPED_EVENT, _pod("notready"))
    sink(api_pb2.CONTAINER_STOPPED_EVENT, _pod("notready"))   # a second StopPodSandbox
    assert [e.container_event_type for e in bus.events] == [
        api_pb2.CONTAINER_CREATED_EVENT, api_pb2.CONTAINER_STARTED_EVENT,
        api_pb2.CONTAINER_STOPPED_EVENT]
    assert {e.container_id for e in bus.events} == {"pod1"}
    assert bus.events[2].pod_sandbox_status.state == api_pb2.SANDBOX_NOTREADY
    assert [s.id for s in bus.events[0].containers_statuses] == ["c"]
