"""nri.endpoint over a socketpair: calls both ways, nested calls, timeouts, grace, a peer that
hangs up or sends garbage."""
from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from nri import mux
from nri.endpoint import Endpoint
from nri.ttrpc import Code, Router, RpcError, Status
from proto import nri_api_pb2 as nri

SVC = "nri.pkg.api.v1alpha1.Plugin"
RT = "nri.pkg.api.v1alpha1.Runtime"


def _pair(plugin_router: Router, runtime_router: Router) -> tuple[Endpoint, Endpoint]:
    a, b = socket.socketpair()
    runtime = Endpoint(a, serve_conn=mux.RUNTIME_SERVICE_CONN, call_conn=mux.PLUGIN_SERVICE_CONN,
                       router=runtime_router, name="runtime")
    plugin = Endpoint(b, serve_conn=mux.PLUGIN_SERVICE_CONN, call_conn=mux.RUNTIME_SERVICE_CONN,
                      router=plugin_router, name="plugin")
    runtime.start()
    plugin.start()
    return runtime, plugin


@pytest.fixture
def ends() -> Iterator[tuple[Endpoint, Endpoint, Router, Router]]:
    pr, rr = Router(), Router()
    runtime, plugin = _pair(pr, rr)
    yield runtime, plugin, pr, rr
    runtime.close()
    plugin.close()


def test_calls_both_ways_and_a_nested_call(
        ends: tuple[Endpoint, Endpoint, Router, Router]) -> None:
    runtime, plugin, pr, rr = ends
    pr.add(SVC, "Configure", nri.ConfigureRequest,
           lambda req: nri.ConfigureResponse(events=len(req.runtime_name)))

    def register(req: nri.RegisterPluginRequest) -> nri.Empty:
        # answered only after the runtime has called the plugin back (as NRI does)
        got = runtime.call(SVC, "Configure", nri.ConfigureRequest(runtime_name="pycri"),
                           nri.ConfigureResponse, 5)
        assert got.events == 5
        return nri.Empty()

    rr.add(RT, "RegisterPlugin", nri.RegisterPluginRequest, register)
    plugin.call(RT, "RegisterPlugin", nri.RegisterPluginRequest(plugin_name="p"), nri.Empty, 5)


def test_a_big_message_crosses(ends: tuple[Endpoint, Endpoint, Router, Router]) -> None:
    runtime, plugin, pr, _ = ends
    pr.add(SVC, "Synchronize", nri.SynchronizeRequest,
           lambda req: nri.SynchronizeResponse(more=len(req.pods) == 3000))
    pods = [nri.PodSandbox(id=f"{i:064d}", name="x" * 100) for i in range(3000)]
    assert runtime.call(SVC, "Synchronize", nri.SynchronizeRequest(pods=pods),
                        nri.SynchronizeResponse, 10).more


def test_error_status_is_not_fatal(ends: tuple[Endpoint, Endpoint, Router, Router]) -> None:
    runtime, _, pr, _ = ends

    def deny(req: nri.CreateContainerRequest) -> nri.CreateContainerResponse:
        raise RpcError(Status(Code.PERMISSION_DENIED, "no"))

    pr.add(SVC, "CreateContainer", nri.CreateContainerRequest, deny)
    with pytest.raises(RpcError) as e:
        runtime.call(SVC, "CreateContainer", nri.CreateContainerRequest(),
                     nri.CreateContainerResponse, 5)
    assert e.value.code == Code.PERMISSION_DENIED and not e.value.fatal
    with pytest.raises(RpcError) as e:
        runtime.call(SVC, "Nope", nri.Empty(), nri.Empty, 5)
    assert e.value.code == Code.UNIMPLEMENTED
    assert not runtime.closed


def _slow(seconds: float) -> object:
    def handler(req: nri.Empty) -> nri.Empty:
        time.sleep(seconds)
        return nri.Empty()
    return handler


def test_timeout_is_fatal_and_grace_lets_a_late_answer_through(
        ends: tuple[Endpoint, Endpoint, Router, Router]) -> None:
    runtime, _, pr, _ = ends
    pr.add(SVC, "Shutdown", nri.Empty, _slow(0.3))  # type: ignore[arg-type]
    t0 = time.monotonic()
    with pytest.raises(RpcError) as e:
        runtime.call(SVC, "Shutdown", nri.Empty(), nri.Empty, 0.1)
    assert e.value.code == Code.DEADLINE_EXCEEDED and e.value.fatal
    assert time.monotonic() - t0 < 0.3
    time.sleep(0.3)  # the late answer arrives and is ignored
    runtime.call(SVC, "Shutdown", nri.Empty(), nri.Empty, 0.2, grace=0.5)


def test_a_peer_that_hangs_up_fails_pending_calls(
        ends: tuple[Endpoint, Endpoint, Router, Router]) -> None:
    runtime, plugin, pr, _ = ends
    pr.add(SVC, "Shutdown", nri.Empty, _slow(10))  # type: ignore[arg-type]
    threading.Timer(0.2, plugin.close).start()
    t0 = time.monotonic()
    with pytest.raises(RpcError) as e:
        runtime.call(SVC, "Shutdown", nri.Empty(), nri.Empty, 5)
    assert e.value.code == Code.UNAVAILABLE and e.value.fatal
    assert time.monotonic() - t0 < 2
    assert runtime.wait_closed(2)
    with pytest.raises(RpcError, match="closed"):
        runtime.call(SVC, "Shutdown", nri.Empty(), nri.Empty, 5)


def test_garbage_closes_the_connection() -> None:
    a, b = socket.socketpair()
    closed: list[str] = []
    runtime = Endpoint(a, serve_conn=2, call_conn=1, router=Router(), on_close=closed.append)
    runtime.start()
    b.sendall(b"\x00\x00\x00\x02\xff\xff\xff\xff")  # a trunk frame no multiplexer writes
    assert runtime.wait_closed(2)
    deadline = time.monotonic() + 2
    while not closed and time.monotonic() < deadline:  # on_close runs just after
        time.sleep(0.01)
    assert closed and "protocol error" in closed[0]
    assert b.recv(100) == b""
    b.close()
