"""Kubernetes channel multiplexing over WebSocket, and the SPDY-in-WebSocket tunnel."""
from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from cri_server.streaming import k8s_protocols as kp
from cri_server.streaming import websocket
from cri_server.streaming.websocket import WsChannelConnection
from cri_server.streaming.ws_tunnel import WsTunnelSocket


def ws_pair(protocol: str) -> tuple[WsChannelConnection, WsChannelConnection]:
    a, b = socket.socketpair()
    server = WsChannelConnection(a, protocol, name="t-ws-server").start()
    client = WsChannelConnection(b, protocol, client_side=True, name="t-ws-client").start()
    return server, client


@pytest.fixture(params=[kp.V5, kp.V4, kp.V4_BASE64, kp.BASE64, ""])
def pair(request: pytest.FixtureRequest) -> Iterator[tuple[WsChannelConnection,
                                                            WsChannelConnection]]:
    server, client = ws_pair(request.param)
    yield server, client
    client.close()
    server.close()


def test_channels_are_kept_apart(pair: tuple[WsChannelConnection, WsChannelConnection]) -> None:
    server, client = pair
    client.send(0, b"stdin \x00\xff bytes")
    server.send(1, b"out")
    server.send(2, b"err")
    server.send(1, b"put")
    assert server.read(0, timeout=5) == b"stdin \x00\xff bytes"
    assert client.read(2, timeout=5) == b"err"
    out = b""
    while len(out) < 6:  # a channel is a byte stream: messages may coalesce
        out += client.read(1, timeout=5)
    assert out == b"output"


def test_base64_protocols_send_text(pair: tuple[WsChannelConnection, WsChannelConnection]) -> None:
    server, _client = pair
    assert server.base64 == (server.protocol in (kp.BASE64, kp.V4_BASE64))


def test_v5_close_signal_ends_one_channel() -> None:
    server, client = ws_pair(kp.V5)
    try:
        client.send(0, b"last")
        client.send_close_signal(0)
        client.send(4, b"{}")
        assert server.read(0, timeout=5) == b"last"
        assert server.read(0, timeout=5) == b""      # closed, while the connection lives
        assert server.read(4, timeout=5) == b"{}"
    finally:
        client.close()
        server.close()


def test_close_ends_every_read() -> None:
    server, client = ws_pair(kp.V4)
    client.close()
    assert server.read(0, timeout=5) == b""
    assert server.wait_closed(5)
    assert server.close_code == 1000
    server.close()


def test_reader_pauses_while_a_channel_buffer_is_full(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(websocket, "MAX_CHANNEL_BUFFER", 64 * 1024)
    server, client = ws_pair(kp.V4)
    try:
        chunk = b"m" * 16384
        def write_all() -> None:
            for _ in range(128):
                client.send(0, chunk)
        writer = threading.Thread(target=write_all)
        writer.start()
        total, largest = 0, 0
        while total < 128 * len(chunk):
            data = server.read(0, 4096, timeout=10)
            assert data
            total += len(data)
            largest = max(largest, len(server._inputs[0]))
        writer.join(10)
        assert largest <= 64 * 1024 + 64 * 1024 + 16384
    finally:
        client.close()
        server.close()


def test_spdy_tunnel_is_a_byte_stream() -> None:
    a, b = socket.socketpair()
    server, client = WsTunnelSocket(a), WsTunnelSocket(b, client_side=True)
    client.sendall(b"abc")
    client.sendall(b"defgh")
    got = b""
    while len(got) < 8:
        got += server.recv(3)
    assert got == b"abcdefgh"
    server.sendall(b"back")
    assert client.recv(100) == b"back"
    client.close()
    assert server.recv(10) == b""
    server.close()


def test_unfinished_text_message_is_limited(monkeypatch: pytest.MonkeyPatch) -> None:
    """A base64 client streaming one never-finished text message must not grow memory."""
    from wsproto.connection import Connection, ConnectionType
    from wsproto.events import TextMessage
    monkeypatch.setattr(websocket, "MAX_MESSAGE", 64 * 1024)
    a, b = socket.socketpair()
    server = WsChannelConnection(a, kp.V4_BASE64, name="t-ws-server").start()
    raw = Connection(ConnectionType.CLIENT)
    try:
        b.settimeout(10)
        for _ in range(32):   # 32 x 16 KiB fragments of one message: twice the limit
            try:
                b.sendall(raw.send(TextMessage(data="0" + "A" * 16383, message_finished=False)))
            except OSError:
                break
        assert server.wait_closed(10)
        # The limit is checked after each received chunk: at most one recv() beyond it.
        assert server._partial_text_len <= 64 * 1024 + websocket._RECV_SIZE
    finally:
        b.close()
        server.close()


def test_base64_channels_out_of_range_are_dropped_and_total_is_bounded(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import base64 as b64

    from wsproto.connection import Connection, ConnectionType
    from wsproto.events import TextMessage
    monkeypatch.setattr(websocket, "MAX_TOTAL_BUFFER", 64 * 1024)
    a, b = socket.socketpair()
    server = WsChannelConnection(a, kp.V4_BASE64, name="t-ws-server").start()
    raw = Connection(ConnectionType.CLIENT)
    payload = b64.b64encode(b"x" * 16384).decode()

    def flood() -> None:
        with_timeout = b
        with_timeout.settimeout(2)
        try:
            for k in range(64):   # 64 distinct unread channels, 1 MiB in all
                with_timeout.sendall(raw.send(TextMessage(data=chr(ord("0") + k) + payload)))
            with_timeout.sendall(raw.send(TextMessage(data="\u4e00" + payload)))
        except OSError:
            pass   # the server stopped reading: backpressure
    try:
        writer = threading.Thread(target=flood)
        writer.start()
        writer.join(15)
        assert not writer.is_alive()
        with server._cond:
            total = sum(len(v) for v in server._inputs.values())
            channels = set(server._inputs)
        # Space is checked before each recv(): one recv() (up to _RECV_SIZE of wire bytes, of
        # which base64 decodes to less) plus the message it completes may land past the limit.
        assert total <= 64 * 1024 + websocket._RECV_SIZE + 16384
        assert all(0 <= c <= 255 for c in channels)
    finally:
        b.close()
        server.close()
