"""GetContainerEvents through the real gRPC API: every subscriber gets CREATED, STARTED,
STOPPED, DELETED in order with the pod's status and the containers' statuses, also for a
container that exits on its own; a subscriber that never reads blocks nobody."""
from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from proto import api_pb2
from tests.support import pods
from tests.support.containers import ContainerEnv

CREATED, STARTED, STOPPED, DELETED = (api_pb2.CONTAINER_CREATED_EVENT,
                                      api_pb2.CONTAINER_STARTED_EVENT,
                                      api_pb2.CONTAINER_STOPPED_EVENT,
                                      api_pb2.CONTAINER_DELETED_EVENT)


class Subscriber:
    """One GetContainerEvents stream read by a thread (or never read: `read=False`)."""

    def __init__(self, env: ContainerEnv, read: bool = True) -> None:
        self.call: Any = env.cri.runtime.GetContainerEvents(api_pb2.GetEventsRequest())
        self.call.initial_metadata()  # the daemon sends headers once it has subscribed us
        self.events: list[api_pb2.ContainerEventResponse] = []
        self.error: grpc.RpcError | None = None
        self._thread = threading.Thread(target=self._read, daemon=True) if read else None
        if self._thread is not None:
            self._thread.start()

    def _read(self) -> None:
        try:
            for event in self.call:
                self.events.append(event)
        except grpc.RpcError as exc:
            self.error = exc

    def of(self, cid: str) -> list[api_pb2.ContainerEventResponse]:
        return [e for e in list(self.events) if e.container_id == cid]

    def wait_for(self, cid: str, count: int, timeout: float = 15.0
                 ) -> list[api_pb2.ContainerEventResponse]:
        deadline = time.monotonic() + timeout
        while len(self.of(cid)) < count:
            assert self.error is None, self.error
            assert time.monotonic() < deadline, [e.container_event_type for e in self.of(cid)]
            time.sleep(0.02)
        return self.of(cid)

    def close(self) -> None:
        self.call.cancel()
        if self._thread is not None:
            self._thread.join(5)


@pytest.fixture
def subscribers(container_env: ContainerEnv) -> Iterator[list[Subscriber]]:
    subs = [Subscriber(container_env), Subscriber(container_env),
            Subscriber(container_env, read=False)]
    try:
        yield subs
    finally:
        for s in subs:
            s.close()


def _status_of(event: api_pb2.ContainerEventResponse, cid: str) -> api_pb2.ContainerStatus:
    return next(s for s in event.containers_statuses if s.id == cid)


def test_lifecycle_events_in_order_for_every_subscriber(
        container_env: ContainerEnv, subscribers: list[Subscriber]) -> None:
    env = container_env
    neighbour = env.run(["sleep", "1000"])
    cid = env.create(env.config(["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 0.1; done"]))
    env.start_container(cid)
    env.cri.StopContainer(api_pb2.StopContainerRequest(container_id=cid, timeout=5))
    env.remove(cid)
    for sub in subscribers[:2]:
        events = sub.wait_for(cid, 4)
        assert [e.container_event_type for e in events] == [CREATED, STARTED, STOPPED, DELETED]
        times = [e.created_at for e in events]
        assert times == sorted(times) and times[0] > 0
        for e in events:
            assert e.pod_sandbox_status.id == env.pod_id
            assert e.pod_sandbox_status.state == api_pb2.SANDBOX_READY
            # every container of the pod, as kubelet's evented PLEG needs them
            assert neighbour in [s.id for s in e.containers_statuses]
        assert _status_of(events[0], cid).state == api_pb2.CONTAINER_CREATED
        assert _status_of(events[1], cid).state == api_pb2.CONTAINER_RUNNING
        assert _status_of(events[2], cid).state == api_pb2.CONTAINER_EXITED
        assert cid not in [s.id for s in events[3].containers_statuses]  # gone by then
    # both readers saw the same events in the same order
    assert [(e.container_id, e.container_event_type) for e in subscribers[0].events] == \
        [(e.container_id, e.container_event_type) for e in subscribers[1].events][
            :len(subscribers[0].events)]
    env.remove(neighbour)


def test_exit_on_its_own_and_removal_while_running(
        container_env: ContainerEnv, subscribers: list[Subscriber]) -> None:
    env = container_env
    quick = env.run(["true"])                      # exits at once, nobody stops it
    events = subscribers[0].wait_for(quick, 3)
    assert [e.container_event_type for e in events] == [CREATED, STARTED, STOPPED]
    assert _status_of(events[2], quick).state == api_pb2.CONTAINER_EXITED
    assert _status_of(events[2], quick).exit_code == 0
    env.remove(quick)
    assert subscribers[0].wait_for(quick, 4)[3].container_event_type == DELETED
    # removing a running container: it is stopped first (STOPPED, then DELETED)
    busy = env.run(["sleep", "1000"])
    env.remove(busy)
    events = subscribers[1].wait_for(busy, 4)
    assert [e.container_event_type for e in events] == [CREATED, STARTED, STOPPED, DELETED]
    # a subscriber that never reads did not hold anything up, and a late one sees new events
    late = Subscriber(env)
    try:
        another = env.create(env.config(["true"]))
        assert late.wait_for(another, 1)[0].container_event_type == CREATED
        env.remove(another)
        assert [e.container_event_type for e in late.wait_for(another, 2)] == [CREATED, DELETED]
    finally:
        late.close()


def test_pod_sandbox_events_with_the_pod_id(container_env: ContainerEnv,
                                            subscribers: list[Subscriber]) -> None:
    """As containerd: the pod's own lifecycle as events whose container id is the pod id."""
    env = container_env
    pod_id = pods.run_pod(env.cri)
    try:
        cid = env.create(env.config(
            ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 0.1; done"]), pod_id=pod_id)
        env.start_container(cid)
        pods.stop(env.cri, pod_id)          # stops the container first
    finally:
        pods.remove(env.cri, pod_id)
    if cid in env.created:
        env.created.remove(cid)
    sub = subscribers[0]
    events = sub.wait_for(pod_id, 4)
    assert [e.container_event_type for e in events] == [CREATED, STARTED, STOPPED, DELETED]
    assert all(e.pod_sandbox_status.id == pod_id for e in events)
    assert events[1].pod_sandbox_status.state == api_pb2.SANDBOX_READY
    assert events[2].pod_sandbox_status.state == api_pb2.SANDBOX_NOTREADY
    stopped = _status_of(events[2], cid)
    assert stopped.state == api_pb2.CONTAINER_EXITED
    assert list(events[3].containers_statuses) == []          # removed with the pod
    order = [(e.container_id, e.container_event_type) for e in sub.events]
    assert order.index((cid, STOPPED)) < order.index((pod_id, STOPPED))
    assert order.index((cid, DELETED)) < order.index((pod_id, DELETED))
