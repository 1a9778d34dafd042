"""Kubernetes channel multiplexing over one WebSocket (RFC 6455 via wsproto).

Every message carries one channel: binary protocols (`channel.k8s.io`,
`v4.channel.k8s.io`, `v5.channel.k8s.io`, and no protocol at all) prefix the payload
with the channel number byte; base64 protocols (`base64.channel.k8s.io`,
`v4.base64.channel.k8s.io`) send text messages: the channel as an ASCII digit, then the
payload in base64. `v5.channel.k8s.io` adds a close signal: a message on channel 255
whose payload is the number of the channel its sender will not write again.

`WsChannelConnection` runs one reader thread; `read(channel)` blocks for a channel's
data, `send(channel, data)` writes a message. The handshake is done by the caller (the
server answers the HTTP upgrade; the test client sends it), so this class is used on
both sides.
"""
from __future__ import annotations

import base64
import binascii
import contextlib
import socket
import threading
import time

from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import (
    BytesMessage,
    CloseConnection,
    Ping,
    TextMessage,
)
from wsproto.utilities import ProtocolError

from cri_server.streaming import k8s_protocols as kp
from cri_server.streaming.transport import ReaderDone, close_connection

_RECV_SIZE = 64 * 1024
MAX_MESSAGE = 16 * 1024 * 1024
# Stop reading the socket (TCP backpressure) while a channel holds this much unread data,
# or all channels together hold MAX_TOTAL_BUFFER (data for channels nobody reads).
MAX_CHANNEL_BUFFER = 1024 * 1024
MAX_TOTAL_BUFFER = 8 * 1024 * 1024


def is_base64_protocol(protocol: str) -> bool:
    return protocol in (kp.BASE64, kp.V4_BASE64)


class WsChannelConnection(ReaderDone):
    """A channel-multiplexed WebSocket over a connected socket."""

    def __init__(self, sock: socket.socket, protocol: str, client_side: bool = False,
                 trailing_data: bytes = b"", name: str = "pycri-ws") -> None:
        self.sock = sock
        self.protocol = protocol
        self.base64 = is_base64_protocol(protocol)
        self._ws = Connection(ConnectionType.CLIENT if client_side else ConnectionType.SERVER,
                              trailing_data=trailing_data)
        self._cond = threading.Condition()
        self._send_lock = threading.Lock()
        self._inputs: dict[int, bytearray] = {}
        self._eof: set[int] = set()
        self._partial = bytearray()
        self._partial_text: list[str] = []
        self._partial_text_len = 0
        self.closed = False
        self.close_code: int | None = None
        self.close_reason = ""
        super().__init__()
        self._has_trailing = bool(trailing_data)
        self._reader = threading.Thread(target=self._read_loop, name=f"{name}-reader",
                                        daemon=True)

    def start(self) -> WsChannelConnection:
        self._reader.start()
        return self

    # ------------------------------------------------------------ sending

    def _send_event(self, event: object) -> None:
        with self._send_lock:
            if self._ws.state not in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING):
                raise BrokenPipeError("WebSocket is closed")
            data = self._ws.send(event)  # type: ignore[arg-type]
            try:
                self.sock.sendall(data)
            except OSError as exc:
                self._mark_closed()
                raise BrokenPipeError(f"WebSocket send failed: {exc}") from exc

    def send(self, channel: int, data: bytes) -> None:
        """One message on a channel (BrokenPipeError once the connection is closed)."""
        if self.closed:
            raise BrokenPipeError("WebSocket is closed")
        if self.base64:
            text = chr(ord("0") + channel) + base64.b64encode(data).decode("ascii")
            self._send_event(TextMessage(data=text))
        else:
            self._send_event(BytesMessage(data=bytes([channel]) + data))

    def send_close_signal(self, channel: int) -> None:
        """v5: tell the peer we will not write `channel` again."""
        if self.protocol == kp.V5:
            self._send_event(BytesMessage(data=bytes([kp.WS_CLOSE_CHANNEL, channel])))

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Send a close frame, close the socket and join the reader."""
        with contextlib.suppress(Exception):
            if self._ws.state == ConnectionState.OPEN:
                self._send_event(CloseConnection(code=code, reason=reason))
        self._mark_closed()
        close_connection(self.sock, self._reader)

    def linger_close(self, code: int = 1000, timeout: float = 2.0) -> None:
        """Close handshake: send our close frame and wait (briefly) for the peer's."""
        with contextlib.suppress(Exception):
            if self._ws.state == ConnectionState.OPEN:
                self._send_event(CloseConnection(code=code))
        self._done.wait(timeout)
        self.close()

    # ------------------------------------------------------------ receiving

    def read(self, channel: int, size: int = 65536, timeout: float | None = None) -> bytes:
        """Data of one channel; b"" once it was closed (v5) or the connection ended."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                buf = self._inputs.get(channel)
                if buf:
                    chunk = bytes(buf[:size])
                    del buf[:size]
                    self._cond.notify_all()
                    return chunk
                if self.closed or channel in self._eof:
                    return b""
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(f"no data on WebSocket channel {channel}")
                self._cond.wait(remaining)

    def input(self, channel: int) -> WsInput:
        return WsInput(self, channel)

    def output(self, channel: int) -> WsOutput:
        return WsOutput(self, channel)

    def _mark_closed(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def _read_loop(self) -> None:
        try:
            if self._has_trailing:
                self._handle_events()
            while not self.closed:
                self._wait_for_buffer_space()
                if self.closed:
                    break
                try:
                    data = self.sock.recv(_RECV_SIZE)
                except OSError:
                    break
                self._ws.receive_data(data or None)
                self._handle_events()
                if not data:
                    break
        except ProtocolError as exc:
            with contextlib.suppress(Exception):
                self.close_reason = str(exc)
                self._send_event(CloseConnection(code=1002, reason="protocol error"))
        finally:
            self._mark_closed()
            self._done.set()

    def _wait_for_buffer_space(self) -> None:
        with self._cond:
            while not self.closed and (
                    any(len(b) > MAX_CHANNEL_BUFFER for b in self._inputs.values())
                    or sum(len(b) for b in self._inputs.values()) > MAX_TOTAL_BUFFER):
                self._cond.wait(0.5)

    def _handle_events(self) -> None:
        for event in self._ws.events():
            if isinstance(event, BytesMessage):
                self._partial += event.data
                if len(self._partial) > MAX_MESSAGE:
                    raise ProtocolError("message larger than 16 MiB")
                if event.message_finished:
                    data = bytes(self._partial)
                    self._partial.clear()
                    self._on_binary(data)
            elif isinstance(event, TextMessage):
                self._partial_text.append(event.data)
                self._partial_text_len += len(event.data)
                if self._partial_text_len > MAX_MESSAGE:
                    raise ProtocolError("message larger than 16 MiB")
                if event.message_finished:
                    text = "".join(self._partial_text)
                    self._partial_text.clear()
                    self._partial_text_len = 0
                    self._on_text(text)
            elif isinstance(event, Ping):
                with contextlib.suppress(BrokenPipeError):
                    self._send_event(event.response())
            elif isinstance(event, CloseConnection):
                self.close_code = event.code
                self.close_reason = event.reason or ""
                with contextlib.suppress(BrokenPipeError, Exception):
                    if self._ws.state == ConnectionState.REMOTE_CLOSING:
                        self._send_event(event.response())
                self._mark_closed()

    def _on_binary(self, msg: bytes) -> None:
        if not msg:
            return
        self._deliver(msg[0], msg[1:])

    def _on_text(self, msg: str) -> None:
        if not msg:
            return
        channel = ord(msg[0]) - ord("0")
        if not 0 <= channel <= 255:
            return   # not a channel: dropped, as an unknown channel's data would be
        try:
            data = base64.b64decode(msg[1:], validate=False)
        except (binascii.Error, ValueError):
            return
        self._deliver(channel, data)

    def _deliver(self, channel: int, data: bytes) -> None:
        with self._cond:
            if channel == kp.WS_CLOSE_CHANNEL and self.protocol == kp.V5:
                if data:
                    self._eof.add(data[0])
            elif data:
                self._inputs.setdefault(channel, bytearray()).extend(data)
            self._cond.notify_all()


class WsInput:
    def __init__(self, conn: WsChannelConnection, channel: int) -> None:
        self.conn = conn
        self.channel = channel

    def read(self, size: int = 65536, timeout: float | None = None) -> bytes:
        return self.conn.read(self.channel, size, timeout)


class WsOutput:
    def __init__(self, conn: WsChannelConnection, channel: int) -> None:
        self.conn = conn
        self.channel = channel

    def write(self, data: bytes) -> None:
        self.conn.send(self.channel, data)

    def close(self) -> None:
        """Nothing to send for the server's streams; a v5 client signals its close."""

