"""One plugin connected to the runtime: registration, its subscriptions, calls to it."""
from __future__ import annotations

import logging
import re
import socket
import threading
from collections.abc import Callable
from typing import TypeVar

from google.protobuf.message import Message

from nri import mux
from nri.endpoint import Endpoint
from nri.ttrpc import Code, Router, RpcError, Status
from proto import nri_api_pb2 as nri

log = logging.getLogger(__name__)

RUNTIME_SERVICE = "nri.pkg.api.v1alpha1.Runtime"
PLUGIN_SERVICE = "nri.pkg.api.v1alpha1.Plugin"
NAME_RE = re.compile(r"[A-Za-z0-9._+-]+")
INDEX_RE = re.compile(r"[0-9][0-9]")
# Every event a plugin can subscribe to (upstream ValidEvents: bits of Event 1..LAST-1).
VALID_EVENTS = (1 << (nri.LAST - 1)) - 1

M = TypeVar("M", bound=Message)
# A plugin is told plugin_request_timeout and answers within it; its answer is awaited up to
# a quarter (at most 0.5 s) longer, for the trip back (see Endpoint.call).
UpdateHandler = Callable[["Plugin", list[nri.ContainerUpdate], list[nri.ContainerEviction]],
                         list[nri.ContainerUpdate]]


def event_bit(event: int) -> int:
    return 1 << (event - 1)


class Plugin:
    def __init__(self, sock: socket.socket, *, request_timeout: float,
                 on_update: UpdateHandler, on_close: Callable[[Plugin], None],
                 name: str = "", index: str = "") -> None:
        self.name = name      # preset for plugins pycri started itself
        self.index = index
        self.nri_version = ""
        self.events = 0
        self.request_timeout = request_timeout
        self.registered = threading.Event()
        self.registration_error = ""
        self._on_update = on_update
        self._on_close = on_close
        router = Router()
        router.add(RUNTIME_SERVICE, "RegisterPlugin", nri.RegisterPluginRequest, self._register)
        router.add(RUNTIME_SERVICE, "UpdateContainers", nri.UpdateContainersRequest,
                   self._update_containers)
        self.endpoint = Endpoint(sock, serve_conn=mux.RUNTIME_SERVICE_CONN,
                                 call_conn=mux.PLUGIN_SERVICE_CONN, router=router,
                                 name="nri-plugin", on_close=self._closed)

    def __repr__(self) -> str:
        return f"{self.index or '??'}-{self.name or 'plugin'}"

    @property
    def sort_key(self) -> tuple[str, str]:
        return (self.index, self.name)

    @property
    def closed(self) -> bool:
        return self.endpoint.closed

    def start(self) -> None:
        self.endpoint.start()

    def close(self, reason: str) -> None:
        self.endpoint.close(reason)

    def _closed(self, reason: str) -> None:
        log.info("NRI plugin %r disconnected: %s", self, reason)
        self.registration_error = self.registration_error or reason
        self.registered.set()  # wakes a registration wait
        self._on_close(self)

    def _register(self, req: nri.RegisterPluginRequest) -> nri.Empty:
        if self.registered.is_set():
            raise RpcError(Status(Code.FAILED_PRECONDITION, "plugin already registered"))
        name, index = req.plugin_name, req.plugin_idx
        if not NAME_RE.fullmatch(name) or len(name) > 128:
            self.registration_error = f"invalid plugin name {name[:64]!r}"
        elif not INDEX_RE.fullmatch(index):
            self.registration_error = f"invalid plugin index {index[:8]!r}, must be 2 digits"
        if self.registration_error:
            self.registered.set()
            raise RpcError(Status(Code.INVALID_ARGUMENT, self.registration_error))
        if not self.name:
            self.name, self.index = name, index
        self.nri_version = req.NRI_version[:64]
        log.info("NRI plugin %r registered (NRI %s)", self, self.nri_version or "unknown")
        self.registered.set()
        return nri.Empty()

    def _update_containers(self, req: nri.UpdateContainersRequest) -> nri.UpdateContainersResponse:
        if not self.events:
            raise RpcError(Status(Code.FAILED_PRECONDITION, "plugin is not configured yet"))
        failed = self._on_update(self, list(req.update), list(req.evict))
        return nri.UpdateContainersResponse(failed=failed)

    def subscribed(self, event: int) -> bool:
        return bool(self.events & event_bit(event))

    def call(self, method: str, request: Message, response_type: type[M],
             timeout: float | None = None) -> M:
        limit = timeout if timeout is not None else self.request_timeout
        return self.endpoint.call(PLUGIN_SERVICE, method, request, response_type, limit,
                                  grace=min(0.5, limit / 4))
