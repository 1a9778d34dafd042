"""Fuzzing the streaming server's HTTP request head and upgrade handshake
(cri_server.streaming.server: h11 parsing, path and query, SPDY and WebSocket negotiation).

Whatever request head a client sends, the server answers one HTTP status (101 and the
session, or 400/403/404/405 with a reason) or, for a head it could not read at all, closes
the connection; `_handle` never raises (an exception there is a traceback in the daemon's log
and a connection dropped without an answer). Seeds are the requests crictl and kubectl send:
SPDY/3.1 exec and port-forward upgrades, WebSocket exec (v5 first) and the WebSocket
port-forward tunnel. The sessions themselves are replaced by stubs: their input is fuzzed by
test_fuzz_spdy and test_fuzz_websocket.
"""
from __future__ import annotations

import math
import re
import socket
from unittest import mock

from hypothesis import example, given
from hypothesis import strategies as st

from cri_server.streaming import exec_attach, portforward
from cri_server.streaming.server import StreamingServer
from cri_server.streaming.tokens import PendingRequest
from proto import api_pb2
from tests.support.fuzz import fuzz_settings, mutated

_ANSWERS = {b"101", b"400", b"403", b"404", b"405"}


def _head(lines: list[str]) -> bytes:
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


KUBECTL_SPDY_EXEC = _head([
    "POST /exec/tok-exec?command=sh&input=1&output=1&tty=1 HTTP/1.1", "Host: 127.0.0.1:10010",
    "User-Agent: kubectl/v1.31.0 (linux/amd64) kubernetes/9edcffc", "Content-Length: 0",
    "Connection: Upgrade", "Upgrade: SPDY/3.1",
    "X-Stream-Protocol-Version: v4.channel.k8s.io", "X-Stream-Protocol-Version: v3.channel.k8s.io",
    "X-Stream-Protocol-Version: v2.channel.k8s.io", "X-Stream-Protocol-Version: channel.k8s.io",
    "Accept-Encoding: gzip"])
CRICTL_WS_EXEC = _head([
    "GET /exec/tok-exec HTTP/1.1", "Host: 127.0.0.1:10010", "User-Agent: Go-http-client/1.1",
    "Connection: Upgrade", "Sec-Websocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-Websocket-Protocol: v5.channel.k8s.io, v4.channel.k8s.io",
    "Sec-Websocket-Version: 13", "Upgrade: websocket"])
CRICTL_SPDY_PORTFORWARD = _head([
    "POST /portforward/tok-pf HTTP/1.1", "Host: 127.0.0.1:10010",
    "User-Agent: crictl/v1.31.1", "Content-Length: 0", "Connection: Upgrade",
    "Upgrade: SPDY/3.1", "X-Stream-Protocol-Version: portforward.k8s.io"])
KUBECTL_WS_PORTFORWARD = _head([
    "GET /portforward/tok-pf?port=8080,9090 HTTP/1.1", "Host: 127.0.0.1:10010",
    "User-Agent: kubectl/v1.31.0 (linux/amd64) kubernetes/9edcffc", "Connection: Upgrade",
    "Sec-Websocket-Key: x3JJHMbDL1EzLkh9GBhXDw==",
    "Sec-Websocket-Protocol: SPDY/3.1+portforward.k8s.io", "Sec-Websocket-Version: 13",
    "Upgrade: websocket"])
WS_CHANNEL_PORTFORWARD = KUBECTL_WS_PORTFORWARD.replace(
    b"SPDY/3.1+portforward.k8s.io", b"v4.channel.k8s.io")
SAMPLES = [KUBECTL_SPDY_EXEC, CRICTL_WS_EXEC, CRICTL_SPDY_PORTFORWARD, KUBECTL_WS_PORTFORWARD,
           WS_CHANNEL_PORTFORWARD]


def _answer(request: bytes) -> tuple[bytes, int]:
    """The server's status code for one request (b"" when it closed without an answer) and
    how many sessions it started."""
    srv = StreamingServer("127.0.0.1:0", backend=None)  # type: ignore[arg-type]
    srv.tokens._pending["tok-exec"] = PendingRequest(
        "exec", api_pb2.ExecRequest(container_id="c", cmd=["sh"], stdout=True), math.inf)
    srv.tokens._pending["tok-pf"] = PendingRequest(
        "portforward", api_pb2.PortForwardRequest(pod_sandbox_id="p", port=[80]), math.inf)
    sessions = mock.Mock()
    ours, theirs = socket.socketpair()
    try:
        theirs.sendall(request)
        theirs.shutdown(socket.SHUT_WR)
        with mock.patch.object(exec_attach, "serve_spdy", sessions), \
                mock.patch.object(exec_attach, "serve_websocket", sessions), \
                mock.patch.object(portforward, "serve_spdy", sessions), \
                mock.patch.object(portforward, "serve_websocket", sessions):
            srv._handle(ours, "fuzz")
        ours.close()
        reply = b""
        while chunk := theirs.recv(65536):
            reply += chunk
    finally:
        ours.close()
        theirs.close()
    match = re.match(rb"HTTP/1\.1 (\d{3}) ", reply)
    assert reply == b"" or match, reply[:200]
    return (match.group(1) if match else b""), sessions.call_count


@fuzz_settings(300)
@given(mutated(SAMPLES))
@example(KUBECTL_SPDY_EXEC)
@example(CRICTL_WS_EXEC)
@example(CRICTL_SPDY_PORTFORWARD)
@example(KUBECTL_WS_PORTFORWARD)
@example(WS_CHANNEL_PORTFORWARD)
@example(CRICTL_WS_EXEC.replace(b"GET /exec/tok-exec", b"GET //[/exec/tok-exec"))  # bad IPv6 netloc
@example(WS_CHANNEL_PORTFORWARD.replace(b"port=8080,9090", b"port=" + b"9" * 5000))
@example(WS_CHANNEL_PORTFORWARD.replace(b"port=8080,9090", b"port=8080" + b",1" * 5000))
def test_every_request_head_gets_an_answer(request: bytes) -> None:
    status, sessions = _answer(request)
    assert status in _ANSWERS | {b""}
    assert sessions == (1 if status == b"101" else 0)


def test_the_real_client_requests_are_upgraded() -> None:
    """The seeds are the real thing: each one starts a session."""
    assert [_answer(r) for r in SAMPLES] == [(b"101", 1)] * len(SAMPLES)


@fuzz_settings(100)
@given(st.binary(max_size=64 * 1024))
def test_random_bytes_get_an_answer_or_a_close(data: bytes) -> None:
    status, sessions = _answer(data)
    assert status in {b"", b"400", b"404", b"405"} and sessions == 0
