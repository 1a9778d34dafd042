"""Threaded SPDY sessions over a socketpair: streams, flow control, backpressure, teardown."""
from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from cri_server.streaming import spdy_session
from cri_server.streaming.spdy_session import SpdySession, SpdyStream


class Pair:
    def __init__(self, server_mode: str = "auto", client_mode: str = "strict",
                 accept: bool = True) -> None:
        a, b = socket.socketpair()
        self.opened: list[SpdyStream] = []
        self.got_stream = threading.Event()

        def on_stream(stream: SpdyStream) -> bool:
            self.opened.append(stream)
            self.got_stream.set()
            return accept

        self.server = SpdySession(a, client_side=False, on_stream=on_stream,
                                  flow_control=server_mode, name="t-server")  # type: ignore[arg-type]
        self.client = SpdySession(b, client_side=True, flow_control=client_mode,  # type: ignore[arg-type]
                                  name="t-client")
        self.server.start()
        self.client.start()

    def open(self, headers: dict[str, str] | None = None) -> tuple[SpdyStream, SpdyStream]:
        self.got_stream.clear()
        c = self.client.open_stream(headers or {"streamType": "data"})
        c.wait_reply(5)
        assert self.got_stream.wait(5)
        return c, self.opened[-1]

    def close(self) -> None:
        self.client.close()
        self.server.close()


@pytest.fixture
def pair() -> Iterator[Pair]:
    p = Pair()
    yield p
    p.close()


def test_headers_and_data_both_ways(pair: Pair) -> None:
    c, s = pair.open({"streamType": "stdout", "Port": "80"})
    assert s.header("streamtype") == "stdout" and s.header("PORT") == "80"
    c.write(b"to server")
    assert s.read(timeout=5) == b"to server"
    s.write(b"to client")
    s.close()
    assert c.read_all(timeout=5) == b"to client"
    c.close()
    assert s.read(timeout=5) == b""


def test_large_transfer_both_ways_with_flow_control(pair: Pair) -> None:
    c, s = pair.open()
    payload = bytes(range(256)) * 4096  # 1 MiB, 16 windows
    got: dict[str, bytes] = {}

    def serve() -> None:
        got["server"] = s.read_all(timeout=10)
        s.write(got["server"][::-1])
        s.close()

    t = threading.Thread(target=serve)
    t.start()
    c.write(payload)
    c.close()
    back = c.read_all(timeout=10)
    t.join(10)
    assert got["server"] == payload and back == payload[::-1]
    assert pair.server._conn.peer_does_flow_control  # the client announced SETTINGS


def test_refused_stream() -> None:
    p = Pair(accept=False)
    try:
        stream = p.client.open_stream({"streamType": "bogus"})
        with pytest.raises(ConnectionResetError):
            stream.wait_reply(5)
    finally:
        p.close()


def test_ping(pair: Pair) -> None:
    assert pair.client.ping(5)
    assert pair.server.ping(5)


def test_peer_disconnect_wakes_readers_and_writers(pair: Pair) -> None:
    _c, s = pair.open()
    result: list[bytes] = []
    reader = threading.Thread(target=lambda: result.append(s.read()))
    reader.start()
    pair.client.sock.shutdown(socket.SHUT_RDWR)
    reader.join(5)
    assert result == [b""]
    assert pair.server.wait_closed(5)
    with pytest.raises(BrokenPipeError):
        s.write(b"late")


def test_reader_pauses_while_a_stream_buffer_is_full(monkeypatch: pytest.MonkeyPatch) -> None:
    """A peer that ignores flow control cannot make the server buffer without bound."""
    monkeypatch.setattr(spdy_session, "MAX_STREAM_BUFFER", 100 * 1024)
    p = Pair(server_mode="auto", client_mode="auto")
    try:
        c, s = p.open()
        p.client._conn.assume_peer_ignores_flow_control()
        payload = bytes(range(256)) * 8192  # 2 MiB
        def write_and_close() -> None:
            c.write(payload)
            c.close()
        writer = threading.Thread(target=write_and_close)
        writer.start()
        received = bytearray()
        largest = 0
        while chunk := s.read(4096, timeout=10):
            received += chunk
            largest = max(largest, len(s._buf))
        writer.join(10)
        assert bytes(received) == payload
        # Never more than the limit plus what one recv() of the socket can add.
        assert largest <= 100 * 1024 + 64 * 1024 + 16 * 1024
    finally:
        p.close()


def test_no_threads_left_after_close() -> None:
    p = Pair()
    c, s = p.open()
    c.write(b"x")
    s.read(timeout=5)
    p.close()
    names = [t.name for t in threading.enumerate() if t.name.startswith("t-")]
    assert names == []


def test_many_unread_streams_are_bounded_in_total(monkeypatch: pytest.MonkeyPatch) -> None:
    """Data spread over many streams nobody reads (each under the per-stream limit) must
    not pile up without bound either."""
    monkeypatch.setattr(spdy_session, "MAX_STREAM_BUFFER", 64 * 1024)
    monkeypatch.setattr(spdy_session, "MAX_SESSION_BUFFER", 256 * 1024)
    p = Pair(server_mode="auto", client_mode="auto")
    try:
        streams = [p.open({"streamType": "data", "requestid": str(i)})[0] for i in range(40)]
        p.client._conn.assume_peer_ignores_flow_control()
        chunk = b"e" * (48 * 1024)

        def flood() -> None:
            for c in streams:   # 40 x 48 KiB = 1.9 MiB, never read by the server
                try:
                    c.write(chunk)
                except (OSError, ConnectionError):
                    return
        writer = threading.Thread(target=flood, daemon=True)
        writer.start()
        writer.join(3)   # blocks once the server stops reading (backpressure)
        with p.server._cond:
            total = sum(len(st._buf) for st in p.server._streams.values())
        assert total <= 256 * 1024 + 64 * 1024 + 16 * 1024
    finally:
        p.server.close()
        p.client.close()
