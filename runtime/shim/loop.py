"""A small single-threaded event loop: epoll readiness callbacks + timers.

Owners (runtime.shim.monitor serves every pod from one loop): each callback is registered
with the loop's current `owner` (whatever was running when it was added: a pod's callbacks
register more callbacks of that pod) and runs with `owner` set to it again. With an
`on_error(owner, exc)` handler an exception in a callback goes there instead of out of
run(), and a reader that raised is dropped (so it cannot spin); without one it propagates.

Also BufferedWriter, which writes to a non-blocking fd without ever blocking the
loop: data is queued and flushed when the fd is writable, with a byte limit.
"""
from __future__ import annotations

import errno
import heapq
import itertools
import os
import selectors
import time
from collections.abc import Callable

Callback = Callable[[], None]


class Timer:
    __slots__ = ("callback", "cancelled", "deadline", "owner")

    def __init__(self, deadline: float, callback: Callback, owner: object = None) -> None:
        self.deadline = deadline
        self.callback = callback
        self.cancelled = False
        self.owner = owner

    def cancel(self) -> None:
        self.cancelled = True


ErrorHandler = Callable[[object, Exception], None]


class Loop:
    def __init__(self, on_error: ErrorHandler | None = None) -> None:
        self._sel = selectors.DefaultSelector()
        self._readers: dict[int, tuple[Callback, object]] = {}
        self._writers: dict[int, tuple[Callback, object]] = {}
        self._timers: list[tuple[float, int, Timer]] = []
        self._seq = itertools.count()
        self.running = False
        #: whose callbacks run now (and are registered now); see the module docstring
        self.owner: object = None
        self._on_error = on_error

    def call_as(self, owner: object, cb: Callback) -> bool:
        """Run cb with `owner` current; False when it raised and on_error took it."""
        prev, self.owner = self.owner, owner
        try:
            if self._on_error is None:
                cb()
                return True
            try:
                cb()
                return True
            except Exception as e:  # noqa: BLE001 - one owner's failure, not the loop's
                self._on_error(owner, e)
                return False
        finally:
            self.owner = prev

    # --- fd callbacks -------------------------------------------------------
    def _update(self, fd: int) -> None:
        mask = (selectors.EVENT_READ if fd in self._readers else 0) | \
               (selectors.EVENT_WRITE if fd in self._writers else 0)
        try:
            self._sel.get_key(fd)
            registered = True
        except KeyError:
            registered = False
        if mask == 0:
            if registered:
                self._sel.unregister(fd)
        elif registered:
            self._sel.modify(fd, mask)
        else:
            self._sel.register(fd, mask)

    def add_reader(self, fd: int, cb: Callback) -> None:
        self._readers[fd] = (cb, self.owner)
        self._update(fd)

    def remove_reader(self, fd: int) -> None:
        if self._readers.pop(fd, None) is not None:
            self._update(fd)

    def add_writer(self, fd: int, cb: Callback) -> None:
        self._writers[fd] = (cb, self.owner)
        self._update(fd)

    def remove_writer(self, fd: int) -> None:
        if self._writers.pop(fd, None) is not None:
            self._update(fd)

    def forget(self, fd: int) -> None:
        """Drop every callback of fd (call before closing it; -1 is nothing)."""
        if fd < 0:
            return
        self._readers.pop(fd, None)
        self._writers.pop(fd, None)
        self._update(fd)

    def drop_owner(self, owner: object) -> int:
        """Forget every reader, writer and timer `owner` registered (a pod that is gone: what
        it left on the loop must never run); the fds are not closed. Returns how many."""
        dropped = 0
        for table in (self._readers, self._writers):
            for fd in [fd for fd, (_, o) in table.items() if o is owner]:
                del table[fd]
                self._update(fd)
                dropped += 1
        for _, _, t in self._timers:
            if t.owner is owner and not t.cancelled:
                t.cancel()
                dropped += 1
        return dropped

    def owned(self, owner: object) -> int:
        """How many readers, writers and live timers `owner` has on the loop."""
        return (sum(o is owner for _, o in self._readers.values())
                + sum(o is owner for _, o in self._writers.values())
                + sum(t.owner is owner and not t.cancelled for _, _, t in self._timers))

    # --- timers ---------------------------------------------------------------
    def call_later(self, delay: float, cb: Callback) -> Timer:
        t = Timer(time.monotonic() + max(0.0, delay), cb, self.owner)
        heapq.heappush(self._timers, (t.deadline, next(self._seq), t))
        return t

    # --- running --------------------------------------------------------------
    def run_once(self) -> None:
        timeout: float | None = None
        while self._timers and self._timers[0][2].cancelled:
            heapq.heappop(self._timers)
        if self._timers:
            timeout = max(0.0, self._timers[0][0] - time.monotonic())
        events = self._sel.select(timeout)
        for key, mask in events:
            fd = key.fd
            if mask & selectors.EVENT_READ and fd in self._readers:
                cb, owner = self._readers[fd]
                if not self.call_as(owner, cb) and self._readers.get(fd, (None,))[0] is cb:
                    self.remove_reader(fd)  # it raised: it would raise again on the next turn
            if mask & selectors.EVENT_WRITE and fd in self._writers:
                cb, owner = self._writers[fd]
                if not self.call_as(owner, cb) and self._writers.get(fd, (None,))[0] is cb:
                    self.remove_writer(fd)
        now = time.monotonic()
        while self._timers and self._timers[0][0] <= now:
            _, _, t = heapq.heappop(self._timers)
            if not t.cancelled:
                t.cancelled = True
                self.call_as(t.owner, t.callback)

    def run(self) -> None:
        self.running = True
        while self.running:
            self.run_once()

    def stop(self) -> None:
        self.running = False


class BufferedWriter:
    """Queued non-blocking writes to fd; never blocks.

    write() returns False (and drops the data) when more than `limit` bytes are
    queued. on_error is called once when the fd fails (EPIPE etc.); the writer is
    then closed. close_when_flushed() closes the fd after the queue drains.
    """

    def __init__(self, loop: Loop, fd: int, limit: int = 4 << 20,
                 on_error: Callable[[OSError], None] | None = None,
                 on_closed: Callback | None = None, close_fd: bool = True) -> None:
        self.loop = loop
        self.fd = fd
        self.limit = limit
        self._buf = bytearray()
        self._on_error = on_error
        self._on_closed = on_closed
        self._close_fd = close_fd
        self._closing = False
        self.closed = False
        self.dropped = 0
        self.on_drain: Callback | None = None
        os.set_blocking(fd, False)

    @property
    def queued(self) -> int:
        return len(self._buf)

    def write(self, data: bytes, force: bool = False) -> bool:
        """Queue data; over the limit it is dropped (False) unless force is set."""
        if self.closed or self._closing:
            return False
        if self._buf:
            if len(self._buf) + len(data) > self.limit and not force:
                self.dropped += len(data)
                return False
            self._buf += data
            return True
        try:
            n = os.write(self.fd, data)
        except BlockingIOError:
            n = 0
        except OSError as e:
            self._fail(e)
            return False
        if n < len(data):
            self._buf += data[n:]  # never drop part of a chunk: the peer would lose framing
            self.loop.add_writer(self.fd, self._flush)
        return True

    def _flush(self) -> None:
        try:
            n = os.write(self.fd, self._buf)
        except BlockingIOError:
            return
        except OSError as e:
            self._fail(e)
            return
        del self._buf[:n]
        if not self._buf:
            self.loop.remove_writer(self.fd)
            if self._closing:
                self.close()
            elif self.on_drain is not None:
                cb, self.on_drain = self.on_drain, None
                cb()

    def _fail(self, err: OSError) -> None:
        cb = self._on_error
        self._on_error = None
        self.close()
        if cb is not None and err.errno != errno.EBADF:
            cb(err)

    def close_when_flushed(self) -> None:
        if self.closed:
            return
        if self._buf:
            self._closing = True
        else:
            self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._buf.clear()
        self.loop.remove_writer(self.fd)
        if self._close_fd:
            self.loop.forget(self.fd)
            os.close(self.fd)
        cb = self._on_closed
        self._on_closed = None
        if cb is not None:
            cb()
