"""The end of a streaming session's connection, shared by SPDY and WebSocket sessions."""
from __future__ import annotations

import contextlib
import socket
import threading
from typing import Protocol


class ClosableSocket(Protocol):
    def shutdown(self, how: int, /) -> None: ...

    def close(self) -> None: ...


def close_connection(sock: ClosableSocket, reader: threading.Thread) -> None:
    """Shut the socket down (which wakes the reader), join the reader thread unless it is
    the caller (for at most 5 s), then close the socket."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    if reader.is_alive() and threading.current_thread() is not reader:
        reader.join(5)
    with contextlib.suppress(OSError):
        sock.close()


class ReaderDone:
    """A session served by one reader thread, which sets `done` when it stops (the peer
    closed, failed, or we closed)."""

    def __init__(self) -> None:
        self._done = threading.Event()

    def wait_closed(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    @property
    def done(self) -> threading.Event:
        """Set once the reader stopped: the peer closed, failed, or we closed."""
        return self._done
