"""NRI's connection multiplexer (containerd/nri pkg/net/multiplex), sans-I/O.

One unix socket (the trunk) carries several logical byte streams. Each write on a logical
connection becomes one or more trunk frames: an 8-byte big-endian header (uint32 connection
id, uint32 payload length) and the payload, at most one ttrpc frame's worth (10 + 4 MiB)
per trunk frame; longer writes are split. Id 0 is reserved. NRI uses two connections:

- ``PLUGIN_SERVICE_CONN`` (1): the plugin serves its Plugin service; the runtime is the
  ttrpc client there.
- ``RUNTIME_SERVICE_CONN`` (2): the runtime serves the Runtime service (RegisterPlugin,
  UpdateContainers); the plugin is the client.

How writes are cut matters to Go peers: Go's ttrpc reads a logical connection through a
4096-byte bufio.Reader, and Go's mux fails a Read whose buffer is smaller than the next trunk
frame (ENOMEM), which silently stalls that ttrpc connection. ``encode_message`` therefore
sends each ttrpc message in trunk frames of at most 4096 bytes that never straddle two
messages, so every read Go's reader makes has room for the frame it gets (upstream's own
writer, a 4096-byte bufio.Writer, produces a shape that is just as safe).

Opening a connection sends nothing: each side just starts using the id. Frames for an id
this side has not opened are dropped, as upstream does. Every logical connection is a byte
stream (ttrpc reframes it), so payload is handed up as it arrives and never buffered here:
the demultiplexer holds at most a partial 8-byte header. A frame announcing more than the
maximum payload cannot come from a well-behaved peer (upstream never writes one) and is a
terminal ``MuxError``: the trunk must be closed.
"""
from __future__ import annotations

import struct
from collections.abc import Iterable

from nri import ttrpc

HEADER_LENGTH = 8
MAX_PAYLOAD = ttrpc.HEADER_LENGTH + ttrpc.MAX_MESSAGE_LENGTH
RESERVED_CONN = 0
PLUGIN_SERVICE_CONN = 1
RUNTIME_SERVICE_CONN = 2
_HEADER = struct.Struct(">II")


class MuxError(Exception):
    """The trunk carries something no multiplexer writes; close it."""


def encode(conn_id: int, data: bytes, max_payload: int = MAX_PAYLOAD) -> bytes:
    """The trunk bytes for one write of data on conn_id (an empty write is one empty frame)."""
    if conn_id == RESERVED_CONN:
        raise ValueError(f"connection id {RESERVED_CONN} is reserved")
    if not 0 < conn_id <= 0xFFFF_FFFF:
        raise ValueError(f"connection id {conn_id} out of range")
    if max_payload <= 0:
        raise ValueError("max_payload must be positive")
    if not data:
        return _HEADER.pack(conn_id, 0)
    parts = []
    for i in range(0, len(data), max_payload):
        chunk = data[i:i + max_payload]
        parts.append(_HEADER.pack(conn_id, len(chunk)))
        parts.append(chunk)
    return b"".join(parts)


GO_READ_BUFFER = 4096  # bufio's default size, which Go's ttrpc reads through


def encode_message(conn_id: int, message: bytes) -> bytes:
    """The trunk bytes for one whole ttrpc message, cut so that a Go peer can read them."""
    return encode(conn_id, message, GO_READ_BUFFER)


class Demux:
    """Splits trunk bytes into (connection id, bytes) for the connections opened here."""

    def __init__(self, conn_ids: Iterable[int], max_payload: int = MAX_PAYLOAD) -> None:
        self._open = set(conn_ids)
        if RESERVED_CONN in self._open:
            raise ValueError(f"connection id {RESERVED_CONN} is reserved")
        self._max = max_payload
        self._header = bytearray()
        self._conn = 0
        self._remaining = 0  # payload bytes of the current frame still to come
        self._error: MuxError | None = None
        self.dropped_bytes = 0  # payload for connections not opened here

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        if self._error is not None:
            raise self._error
        out: list[tuple[int, bytes]] = []
        view = memoryview(data)
        pos = 0
        while pos < len(view):
            if self._remaining == 0:
                need = HEADER_LENGTH - len(self._header)
                self._header += view[pos:pos + need]
                pos += min(need, len(view) - pos)
                if len(self._header) < HEADER_LENGTH:
                    break
                self._conn, self._remaining = _HEADER.unpack(self._header)
                self._header.clear()
                if self._remaining > self._max:
                    self._error = MuxError(
                        f"trunk frame of {self._remaining} bytes for connection {self._conn} "
                        f"exceeds the maximum of {self._max}")
                    raise self._error
                continue
            n = min(self._remaining, len(view) - pos)
            chunk = bytes(view[pos:pos + n])
            pos += n
            self._remaining -= n
            if self._conn not in self._open:
                self.dropped_bytes += n
            elif out and out[-1][0] == self._conn:
                out[-1] = (self._conn, out[-1][1] + chunk)
            else:
                out.append((self._conn, chunk))
        return out

    @property
    def mid_frame(self) -> bool:
        """True when the trunk ended (if it ends now) inside a frame."""
        return bool(self._header) or self._remaining > 0
