"""Attach frame codec (shim control protocol, contract 3 of docs/architecture.md).

frame = 1 byte stream + 4 bytes big-endian payload length + payload.
shim -> client: STDOUT, STDERR, EXITED (JSON ContainerState).
client -> shim: STDIN, RESIZE (JSON {"width", "height"}), STDIN_CLOSE.
Pure code, no I/O: used by the shim, runtime.shim_client and the streaming server.
"""
from __future__ import annotations

import struct

STDIN = 0
STDOUT = 1
STDERR = 2
RESIZE = 3
EXITED = 4
STDIN_CLOSE = 5

KNOWN_STREAMS = frozenset({STDIN, STDOUT, STDERR, RESIZE, EXITED, STDIN_CLOSE})
MAX_PAYLOAD = 1 << 20
_HEADER = struct.Struct(">BI")
HEADER_SIZE = _HEADER.size


class FrameError(ValueError):
    """The peer sent bytes that are not a valid frame."""


def encode(stream: int, payload: bytes = b"") -> bytes:
    """One frame as bytes."""
    if stream not in KNOWN_STREAMS:
        raise FrameError(f"unknown frame stream {stream}")
    if len(payload) > MAX_PAYLOAD:
        raise FrameError(f"frame payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    return _HEADER.pack(stream, len(payload)) + payload


class FrameDecoder:
    """Incremental decoder: feed() bytes as they arrive, get complete frames back."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        self._buf += data
        frames: list[tuple[int, bytes]] = []
        while len(self._buf) >= HEADER_SIZE:
            stream, length = _HEADER.unpack_from(self._buf)
            if stream not in KNOWN_STREAMS:
                raise FrameError(f"unknown frame stream {stream}")
            if length > MAX_PAYLOAD:
                raise FrameError(f"frame payload of {length} bytes exceeds {MAX_PAYLOAD}")
            end = HEADER_SIZE + length
            if len(self._buf) < end:
                break
            frames.append((stream, bytes(self._buf[HEADER_SIZE:end])))
            del self._buf[:end]
        return frames

    @property
    def pending(self) -> int:
        """Bytes held for an incomplete frame."""
        return len(self._buf)
