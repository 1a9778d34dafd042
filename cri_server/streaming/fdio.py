"""Interruptible reads and writes on backend file descriptors.

The pumps of the streaming server block on a process's pipes or pty; a `StopSignal`
(a pipe polled alongside) lets another thread wake them when a session is torn down,
so no thread is left blocked on an fd the backend keeps open.
"""
from __future__ import annotations

import contextlib
import errno
import os
import select
import threading

_CHUNK = 32 * 1024
_WRITE_CHUNK = 4096  # <= PIPE_BUF: one chunk fits once the fd polls writable


class StopSignal:
    """A one-shot wake-up for threads polling fds."""

    def __init__(self) -> None:
        self._r, self._w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._set = threading.Event()
        self._lock = threading.Lock()
        self._closed = False

    def fileno(self) -> int:
        return self._r

    def set(self) -> None:
        with self._lock:
            if not self._set.is_set() and not self._closed:
                self._set.set()
                with contextlib.suppress(OSError):
                    os.write(self._w, b"x")

    def is_set(self) -> bool:
        return self._set.is_set()

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._set.set()
                os.close(self._r)
                os.close(self._w)


def read_fd(fd: int, stop: StopSignal, size: int = _CHUNK) -> bytes | None:
    """Read what is available: bytes, b"" at end of file (EIO on a pty too), None if stopped."""
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
    poller.register(stop.fileno(), select.POLLIN)
    while True:
        if stop.is_set():
            return None
        ready = dict(poller.poll())
        if stop.fileno() in ready or stop.is_set():
            return None
        if fd in ready:
            try:
                return os.read(fd, size)
            except BlockingIOError:
                continue
            except OSError as exc:
                if exc.errno in (errno.EIO, errno.EBADF, errno.ECONNRESET):
                    return b""
                raise


def write_fd(fd: int, data: bytes, stop: StopSignal) -> bool:
    """Write everything; False when stopped or the reader is gone (EPIPE)."""
    poller = select.poll()
    poller.register(fd, select.POLLOUT | select.POLLERR)
    poller.register(stop.fileno(), select.POLLIN)
    view = memoryview(data)
    while view:
        if stop.is_set():
            return False
        ready = dict(poller.poll())
        if stop.fileno() in ready:
            return False
        if fd in ready:
            if ready[fd] & select.POLLERR and not ready[fd] & select.POLLOUT:
                return False
            try:
                n = os.write(fd, view[:_WRITE_CHUNK])
            except BlockingIOError:
                continue
            except OSError as exc:
                if exc.errno in (errno.EPIPE, errno.EIO, errno.EBADF, errno.ECONNRESET):
                    return False
                raise
            view = view[n:]
    return True
