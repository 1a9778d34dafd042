"""Blocking, thread-safe SPDY/3.1 sessions over a socket (I/O around spdy.SpdyConnection).

One reader thread per session feeds received bytes to the state machine, answers PINGs,
wakes blocked readers/writers and hands each stream the peer opens to `on_stream`
(called on the reader thread; it must not block and returns whether to accept the
stream: accepted streams get an empty SYN_REPLY, refused ones RST_STREAM CANCEL, as
Kubernetes' spdystream-based servers do). Used by the streaming server (server side)
and by the test clients (client side).

Writers block until their data has been framed, i.e. while the peer's flow-control
window is shut (backpressure). In "auto" flow-control mode a writer blocked for
`FLOW_CONTROL_GRACE` seconds by a peer that never sent a WINDOW_UPDATE or
INITIAL_WINDOW_SIZE decides that the peer ignores flow control (Go's spdystream does)
and stops throttling for the rest of the session.
"""
from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

from cri_server.streaming import spdy
from cri_server.streaming.spdy import FlowControlMode, Headers
from cri_server.streaming.transport import ReaderDone, close_connection

log = logging.getLogger(__name__)

FLOW_CONTROL_GRACE = 0.2
# A peer ignoring flow control could fill memory: stop reading the socket (TCP
# backpressure, as spdystream does) while a stream holds this much unread data, or all
# streams together hold MAX_SESSION_BUFFER (many streams nobody reads, e.g. port-forward
# error streams the client writes to).
MAX_STREAM_BUFFER = 1024 * 1024
MAX_SESSION_BUFFER = 8 * 1024 * 1024
_RECV_SIZE = 64 * 1024


class ByteSocket(Protocol):
    """What a session needs of its transport: a socket, or a WebSocket tunnel."""

    def recv(self, size: int, /) -> bytes: ...

    def sendall(self, data: bytes, /) -> None: ...

    def shutdown(self, how: int, /) -> None: ...

    def close(self) -> None: ...


def _as_header_list(headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> Headers:
    if isinstance(headers, Mapping):
        return [(k.lower(), str(v)) for k, v in headers.items()]
    return [(k.lower(), str(v)) for k, v in headers]


class SpdyStream:
    """One SPDY stream: blocking read/write, half-close, reset."""

    def __init__(self, session: SpdySession, stream_id: int, headers: Headers) -> None:
        self.session = session
        self.stream_id = stream_id
        self.headers = headers
        self.reply_headers: Headers | None = None
        self._buf = bytearray()
        self._eof = False
        self.reset_status: int | None = None
        self._replied = threading.Event()
        # Peer-opened streams: set once our SYN_REPLY is queued (DATA must follow it).
        self.accepted = threading.Event()

    def header(self, name: str, default: str = "") -> str:
        return spdy.header_value(self.headers, name, default)

    # -------------------------------------------------------------- reading

    def read(self, size: int = _RECV_SIZE, timeout: float | None = None) -> bytes:
        """Up to `size` bytes; b"" at end of stream, reset or session end.

        Raises TimeoutError when `timeout` passes without data.
        """
        s = self.session
        deadline = None if timeout is None else time.monotonic() + timeout
        with s._cond:
            while not self._buf and not self._eof and self.reset_status is None and not s.closed:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(f"no data on SPDY stream {self.stream_id}")
                s._cond.wait(remaining)
            if not self._buf:
                return b""
            chunk = bytes(self._buf[:size])
            del self._buf[:size]
            s._conn.acknowledge_received_data(self.stream_id, len(chunk))
            s._cond.notify_all()
        s.flush()
        return chunk

    def read_all(self, timeout: float | None = None) -> bytes:
        out = bytearray()
        while chunk := self.read(timeout=timeout):
            out += chunk
        return bytes(out)

    @property
    def remote_closed(self) -> bool:
        return self._eof or self.reset_status is not None

    # -------------------------------------------------------------- writing

    def write(self, data: bytes) -> None:
        """Send data; blocks until it is framed. BrokenPipeError if the stream is gone."""
        s = self.session
        if self.stream_id % 2 != s._local_parity:
            while not self.accepted.wait(0.5):
                if s.closed or self.reset_status is not None:
                    break
        with s._cond:
            self._check_writable()
            s._conn.send_data(self.stream_id, data)
        s.flush()
        self._wait_framed()

    def _check_writable(self) -> None:
        s = self.session
        if s.closed or self.reset_status is not None or not s._conn.stream_is_open(
                self.stream_id) or s._conn.local_closed(self.stream_id):
            raise BrokenPipeError(f"SPDY stream {self.stream_id} is closed")

    def _wait_framed(self) -> None:
        s = self.session
        blocked_since = None
        with s._cond:
            while s._conn.pending_outbound(self.stream_id) > 0:
                if s.closed or self.reset_status is not None:
                    raise BrokenPipeError(f"SPDY stream {self.stream_id} is closed")
                if s.flow_control == "auto" and not s._conn.peer_does_flow_control:
                    now = time.monotonic()
                    blocked_since = blocked_since or now
                    if now - blocked_since >= FLOW_CONTROL_GRACE:
                        s._conn.assume_peer_ignores_flow_control()
                        break
                    s._cond.wait(FLOW_CONTROL_GRACE)
                else:
                    s._cond.wait(1.0)
        s.flush()

    def close(self) -> None:
        """Half-close our direction (FIN). Harmless if already closed."""
        s = self.session
        with s._cond:
            if s.closed or not s._conn.stream_is_open(self.stream_id):
                return
            s._conn.end_stream(self.stream_id)
        s.flush()
        with contextlib.suppress(BrokenPipeError):
            self._wait_framed()

    def reset(self, status: int = spdy.RstStatus.CANCEL) -> None:
        """RST_STREAM (if the stream is still open); drops unread data."""
        s = self.session
        with s._cond:
            if s.closed or not s._conn.stream_is_open(self.stream_id):
                self._buf.clear()
                s._cond.notify_all()
                return
            s._conn.reset_stream(self.stream_id, status)
            self.reset_status = status
            self._buf.clear()  # unread data is dropped with the stream
            s._cond.notify_all()
        s.flush()

    def wait_reply(self, timeout: float | None = None) -> Headers:
        """Client side: wait for SYN_REPLY. ConnectionError if reset or closed first."""
        if not self._replied.wait(timeout):
            raise TimeoutError(f"no SYN_REPLY for SPDY stream {self.stream_id}")
        if self.reply_headers is None:
            raise ConnectionResetError(f"SPDY stream {self.stream_id} was refused")
        return self.reply_headers


class SpdySession(ReaderDone):
    """A SPDY session over a connected socket, served by one reader thread."""

    def __init__(self, sock: ByteSocket, client_side: bool,
                 on_stream: Callable[[SpdyStream], bool] | None = None,
                 flow_control: FlowControlMode = "auto", initial_data: bytes = b"",
                 name: str = "pycri-spdy", initial_window: int = spdy.DEFAULT_WINDOW) -> None:
        self.sock = sock
        self.flow_control = flow_control
        self._conn = spdy.SpdyConnection(client_side, flow_control, initial_window)
        self._local_parity = 1 if client_side else 0
        self._cond = threading.Condition()
        self._send_lock = threading.Lock()
        self._streams: dict[int, SpdyStream] = {}
        self._on_stream = on_stream
        self._initial_data = initial_data
        self.closed = False
        self.close_reason = ""
        self.goaway_received = False
        self._pings: dict[int, threading.Event] = {}
        super().__init__()
        self._reader = threading.Thread(target=self._read_loop, name=f"{name}-reader",
                                        daemon=True)

    def start(self) -> SpdySession:
        self.flush()
        self._reader.start()
        return self

    # -------------------------------------------------------------- API

    def open_stream(self, headers: Mapping[str, str] | Iterable[tuple[str, str]],
                    fin: bool = False) -> SpdyStream:
        hl = _as_header_list(headers)
        with self._cond:
            if self.closed:
                raise ConnectionError("SPDY session is closed")
            sid = self._conn.open_stream(hl, fin=fin)
            stream = SpdyStream(self, sid, hl)
            self._streams[sid] = stream
        self.flush()
        return stream

    def ping(self, timeout: float = 5.0) -> bool:
        with self._cond:
            ping_id = self._conn.ping()
            done = self._pings[ping_id] = threading.Event()
        self.flush()
        ok = done.wait(timeout)
        with self._cond:
            self._pings.pop(ping_id, None)
        return ok and not self.closed

    def flush(self) -> None:
        with self._send_lock:
            with self._cond:
                data = self._conn.data_to_send()
            if not data:
                return
            try:
                self.sock.sendall(data)
            except OSError as exc:
                self._mark_closed(f"send failed: {exc}")

    def close(self, status: int = spdy.GoAwayStatus.OK) -> None:
        """Send GOAWAY, stop reading and close the socket; joins the reader thread."""
        with self._cond:
            already = self.closed
            if not already:
                self._conn.goaway(status)
        if not already:
            self.flush()
        self._mark_closed("closed locally")
        close_connection(self.sock, self._reader)

    def linger_close(self, timeout: float = 2.0) -> None:
        """Graceful end: GOAWAY, half-close, let the peer finish reading, then close."""
        with self._cond:
            if not self.closed:
                self._conn.goaway(spdy.GoAwayStatus.OK)
        self.flush()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)
        self._done.wait(timeout)
        self.close()

    # -------------------------------------------------------------- reader

    def _mark_closed(self, reason: str) -> None:
        with self._cond:
            if not self.closed:
                self.closed = True
                self.close_reason = reason
            for ev in self._pings.values():
                ev.set()
            for stream in self._streams.values():
                stream._replied.set()
                stream.accepted.set()
            self._cond.notify_all()

    def _read_loop(self) -> None:
        try:
            data = self._initial_data
            while True:
                if data:
                    self._process(data)
                if self.closed:
                    break
                self._wait_for_buffer_space()
                if self.closed:
                    break
                try:
                    data = self.sock.recv(_RECV_SIZE)
                except OSError as exc:
                    self._mark_closed(f"receive failed: {exc}")
                    break
                if not data:
                    self._mark_closed("peer closed the connection")
                    break
        except spdy.SpdyProtocolError as exc:
            self.flush()
            self._mark_closed(f"protocol error: {exc}")
        finally:
            self._mark_closed("reader stopped")
            self._done.set()

    def _wait_for_buffer_space(self) -> None:
        with self._cond:
            while not self.closed and self._buffers_full():
                self._cond.wait(0.5)

    def _buffers_full(self) -> bool:
        live = [len(st._buf) for st in self._streams.values() if st.reset_status is None]
        return any(n > MAX_STREAM_BUFFER for n in live) or sum(live) > MAX_SESSION_BUFFER

    def _process(self, data: bytes) -> None:
        new_streams: list[SpdyStream] = []
        with self._cond:
            events = self._conn.receive_data(data)
            for ev in events:
                self._dispatch(ev, new_streams)
            for sid in [sid for sid, st in self._streams.items()
                        if st.remote_closed and not self._conn.stream_is_open(sid)]:
                del self._streams[sid]
            self._cond.notify_all()
        self.flush()
        for stream in new_streams:
            accept = True
            if self._on_stream is not None:
                try:
                    accept = self._on_stream(stream)
                except Exception:  # a refused stream, not a dead session
                    log.exception("stream handler failed; refusing stream %d", stream.stream_id)
                    accept = False
            with self._cond:
                if self.closed or not self._conn.stream_is_open(stream.stream_id):
                    stream.accepted.set()
                    continue
                if accept:
                    self._conn.reply(stream.stream_id, [])
                    stream.accepted.set()
                else:
                    stream.accepted.set()
                    self._conn.reset_stream(stream.stream_id, spdy.RstStatus.CANCEL)
                    stream.reset_status = spdy.RstStatus.CANCEL
            self.flush()

    def _dispatch(self, ev: spdy.Event, new_streams: list[SpdyStream]) -> None:
        if isinstance(ev, spdy.StreamOpened):
            stream = SpdyStream(self, ev.stream_id, ev.headers)
            self._streams[ev.stream_id] = stream
            new_streams.append(stream)
        elif isinstance(ev, spdy.ReplyReceived):
            st = self._streams.get(ev.stream_id)
            if st:
                st.reply_headers = ev.headers
                st._replied.set()
        elif isinstance(ev, spdy.DataReceived):
            st = self._streams.get(ev.stream_id)
            if st is None:
                self._conn.acknowledge_received_data(ev.stream_id, len(ev.data))
            else:
                st._buf += ev.data
        elif isinstance(ev, spdy.StreamEnded):
            st = self._streams.get(ev.stream_id)
            if st:
                st._eof = True
        elif isinstance(ev, spdy.StreamReset):
            st = self._streams.get(ev.stream_id)
            if st:
                st.reset_status = ev.status
                st._replied.set()
        elif isinstance(ev, spdy.PingAcknowledged):
            done = self._pings.get(ev.ping_id)
            if done:
                done.set()
        elif isinstance(ev, spdy.GoAwayReceived):
            self.goaway_received = True
