"""SPDY tunnelled through a WebSocket (`SPDY/3.1+portforward.k8s.io`, KEP-4006).

client-go's WebSocket port-forward (`kubectl`/`crictl port-forward --transport
websocket`) upgrades to a WebSocket with the subprotocol `SPDY/3.1+portforward.k8s.io`
and then runs an ordinary SPDY/3.1 session over it: the SPDY byte stream is cut into
binary WebSocket messages (message boundaries carry no meaning). `WsTunnelSocket`
gives that byte stream the few socket methods SpdySession uses (recv, sendall,
shutdown, close), so the normal SPDY port-forward handler serves it unchanged.
"""
from __future__ import annotations

import contextlib
import socket
import threading

from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, TextMessage
from wsproto.utilities import ProtocolError

SPDY_TUNNEL_PREFIX = "SPDY/3.1+"
_RECV_SIZE = 64 * 1024


class WsTunnelSocket:
    """A byte stream over binary WebSocket messages; recv() from one thread at a time."""

    def __init__(self, sock: socket.socket, trailing_data: bytes = b"",
                 client_side: bool = False) -> None:
        self._sock = sock
        self._ws = Connection(ConnectionType.CLIENT if client_side else ConnectionType.SERVER,
                              trailing_data=trailing_data)
        self._buf = bytearray()
        self._eof = False
        self._send_lock = threading.Lock()
        self._pending_events = bool(trailing_data)

    def _send(self, event: object) -> None:
        with self._send_lock:
            if self._ws.state not in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING):
                raise BrokenPipeError("WebSocket tunnel is closed")
            self._sock.sendall(self._ws.send(event))  # type: ignore[arg-type]

    def sendall(self, data: bytes) -> None:
        self._send(BytesMessage(data=bytes(data)))

    def recv(self, size: int) -> bytes:
        while not self._buf and not self._eof:
            if self._pending_events:
                self._pending_events = False
            else:
                data = self._sock.recv(_RECV_SIZE)
                self._ws.receive_data(data or None)
                if not data:
                    self._eof = True
            try:
                self._drain_events()
            except ProtocolError:
                self._eof = True
        chunk = bytes(self._buf[:size])
        del self._buf[:size]
        return chunk

    def _drain_events(self) -> None:
        for event in self._ws.events():
            if isinstance(event, BytesMessage):
                self._buf += event.data
            elif isinstance(event, TextMessage):
                self._buf += event.data.encode()
            elif isinstance(event, Ping):
                with contextlib.suppress(OSError):
                    self._send(event.response())
            elif isinstance(event, CloseConnection):
                with contextlib.suppress(OSError):
                    if self._ws.state == ConnectionState.REMOTE_CLOSING:
                        self._send(event.response())
                self._eof = True

    def shutdown(self, how: int) -> None:
        if how in (socket.SHUT_WR, socket.SHUT_RDWR):
            with contextlib.suppress(OSError):
                if self._ws.state == ConnectionState.OPEN:
                    self._send(CloseConnection(code=1000))
        if how == socket.SHUT_RDWR:
            self._sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.shutdown(socket.SHUT_WR)
        self._sock.close()
