"""An NRI plugin for the tests, in Python, over the project's own wire layers (nri/).

It connects to the daemon's NRI socket, registers, answers Configure with its event
subscription and Synchronize with ``sync_updates``, and records every event it gets, in
order, as (method, request) (Shutdown too). ``handlers`` replace the default answer of a method: a handler
gets the request and returns the response message (or raises RpcError, or blocks).
"""
from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from google.protobuf.message import Message

from nri import mux
from nri.endpoint import Endpoint
from nri.ttrpc import Router
from proto import nri_api_pb2 as nri

PLUGIN_SERVICE = "nri.pkg.api.v1alpha1.Plugin"
RUNTIME_SERVICE = "nri.pkg.api.v1alpha1.Runtime"

# method -> (request type, default response type)
EVENT_METHODS: dict[str, tuple[type[Message], type[Message]]] = {
    "RunPodSandbox": (nri.RunPodSandboxRequest, nri.RunPodSandboxResponse),
    "UpdatePodSandbox": (nri.UpdatePodSandboxRequest, nri.UpdatePodSandboxResponse),
    "PostUpdatePodSandbox": (nri.PostUpdatePodSandboxRequest, nri.PostUpdatePodSandboxResponse),
    "StopPodSandbox": (nri.StopPodSandboxRequest, nri.StopPodSandboxResponse),
    "RemovePodSandbox": (nri.RemovePodSandboxRequest, nri.RemovePodSandboxResponse),
    "CreateContainer": (nri.CreateContainerRequest, nri.CreateContainerResponse),
    "PostCreateContainer": (nri.PostCreateContainerRequest, nri.PostCreateContainerResponse),
    "StartContainer": (nri.StartContainerRequest, nri.StartContainerResponse),
    "PostStartContainer": (nri.PostStartContainerRequest, nri.PostStartContainerResponse),
    "UpdateContainer": (nri.UpdateContainerRequest, nri.UpdateContainerResponse),
    "PostUpdateContainer": (nri.PostUpdateContainerRequest, nri.PostUpdateContainerResponse),
    "StopContainer": (nri.StopContainerRequest, nri.StopContainerResponse),
    "RemoveContainer": (nri.RemoveContainerRequest, nri.RemoveContainerResponse),
    "StateChange": (nri.StateChangeEvent, nri.Empty),
    "ValidateContainerAdjustment": (nri.ValidateContainerAdjustmentRequest,
                                    nri.ValidateContainerAdjustmentResponse),
    "Shutdown": (nri.Empty, nri.Empty),
}
ALL_EVENTS = 0  # ConfigureResponse.events = 0 subscribes to everything


def mask(*events: int) -> int:
    out = 0
    for e in events:
        out |= 1 << (e - 1)
    return out


class NriTestPlugin:
    def __init__(self, socket_path: str | Any, name: str = "test", index: str = "10",
                 events: int = ALL_EVENTS,
                 handlers: dict[str, Callable[[Any], Message]] | None = None,
                 sync_updates: Iterable[nri.ContainerUpdate] = ()) -> None:
        self.socket_path = str(socket_path)
        self.name, self.index, self.subscription = name, index, events
        self.handlers = dict(handlers or {})
        self.sync_updates = list(sync_updates)
        self.configured: nri.ConfigureRequest | None = None
        self.synchronized: nri.SynchronizeRequest | None = None
        self.synced = threading.Event()
        self.events: list[tuple[str, Any]] = []
        self._cond = threading.Condition()
        self.endpoint: Endpoint | None = None

    # ------------------------------------------------------------ connection

    def _router(self) -> Router:
        router = Router()
        router.add(PLUGIN_SERVICE, "Configure", nri.ConfigureRequest, self._configure)
        router.add(PLUGIN_SERVICE, "Synchronize", nri.SynchronizeRequest, self._synchronize)
        for method, (req_type, resp_type) in EVENT_METHODS.items():
            router.add(PLUGIN_SERVICE, method, req_type, self._event(method, resp_type))
        return router

    def connect(self, timeout: float = 10.0, sock: socket.socket | None = None
                ) -> NriTestPlugin:
        """Connects (or uses sock, a socket pycri handed to a plugin it started), registers
        and waits until synchronized."""
        if sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(self.socket_path)
        self.endpoint = Endpoint(sock, serve_conn=mux.PLUGIN_SERVICE_CONN,
                                 call_conn=mux.RUNTIME_SERVICE_CONN, router=self._router(),
                                 name=f"test-plugin-{self.name}")
        self.endpoint.start()
        self.endpoint.call(RUNTIME_SERVICE, "RegisterPlugin", nri.RegisterPluginRequest(
            plugin_name=self.name, plugin_idx=self.index, NRI_version="v0.12.1"),
            nri.Empty, timeout)
        if not self.synced.wait(timeout):
            raise TimeoutError(f"plugin {self.name} was not synchronized within {timeout}s")
        return self

    def close(self) -> None:
        if self.endpoint is not None:
            self.endpoint.close("test plugin closed")

    def __enter__(self) -> NriTestPlugin:
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update_containers(self, updates: list[nri.ContainerUpdate],
                          timeout: float = 10.0,
                          evict: Iterable[nri.ContainerEviction] = ()
                          ) -> nri.UpdateContainersResponse:
        assert self.endpoint is not None
        return self.endpoint.call(RUNTIME_SERVICE, "UpdateContainers",
                                  nri.UpdateContainersRequest(update=updates, evict=evict),
                                  nri.UpdateContainersResponse, timeout)

    # ------------------------------------------------------------ handlers

    def _configure(self, req: nri.ConfigureRequest) -> nri.ConfigureResponse:
        self.configured = req
        handler = self.handlers.get("Configure")
        if handler is not None:
            handler(req)  # e.g. blocks (a Configure timeout)
        return nri.ConfigureResponse(events=self.subscription)

    def _synchronize(self, req: nri.SynchronizeRequest) -> nri.SynchronizeResponse:
        self.synchronized = req
        self.synced.set()
        return nri.SynchronizeResponse(update=self.sync_updates)

    def _event(self, method: str, resp_type: type[Message]) -> Callable[[Any], Message]:
        def handle(req: Any) -> Message:
            with self._cond:
                self.events.append((method, req))
                self._cond.notify_all()
            handler = self.handlers.get(method)
            return handler(req) if handler is not None else resp_type()
        return handle

    # ------------------------------------------------------------ what it saw

    def seen(self, *, pod_id: str | None = None, container_id: str | None = None
             ) -> list[str]:
        """Event names so far, for one pod (its own and its containers' events) or container."""
        with self._cond:
            events = list(self.events)
        out = []
        for method, req in events:
            pod = req.pod.id if hasattr(req, "pod") and req.HasField("pod") else ""
            ctr = req.container.id if hasattr(req, "container") and req.HasField("container") \
                else ""
            if pod_id is not None and pod != pod_id:
                continue
            if container_id is not None and ctr != container_id:
                continue
            out.append(method)
        return out

    def request(self, method: str, *, pod_id: str | None = None,
                container_id: str | None = None) -> Any:
        """The last request of that method for that pod or container."""
        with self._cond:
            events = list(self.events)
        for m, req in reversed(events):
            if m != method:
                continue
            if pod_id is not None and req.pod.id != pod_id:
                continue
            if container_id is not None and req.container.id != container_id:
                continue
            return req
        raise AssertionError(f"no {method} seen (pod {pod_id}, container {container_id})")

    def wait_for(self, pred: Callable[[], bool], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not pred():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"plugin {self.name}: condition not met; events: "
                                       f"{[m for m, _ in self.events]}")
                self._cond.wait(min(left, 0.1))


def main(argv: list[str]) -> None:
    """`python -m tests.support.nri_plugin SOCKET NAME INDEX METHOD MARK`: a plugin process
    that blocks forever in METHOD after creating the file MARK (for kill-mid-call tests)."""
    sock_path, name, index, method, mark = argv

    def block(req: Any) -> Message:
        with open(mark, "w"):
            pass
        threading.Event().wait()
        raise AssertionError("unreachable")

    plugin = NriTestPlugin(sock_path, name=name, index=index, handlers={method: block}).connect()
    print("synchronized", flush=True)
    assert plugin.endpoint is not None
    plugin.endpoint.wait_closed()


if __name__ == "__main__":
    import sys
    main(sys.argv[1:])
