"""One NRI connection over a connected unix socket: the I/O around nri.mux and nri.ttrpc.

Both ends of NRI use it the same way, with the connection ids swapped:

- the runtime serves the Runtime service on ``RUNTIME_SERVICE_CONN`` and calls the plugin
  on ``PLUGIN_SERVICE_CONN``;
- a plugin serves the Plugin service on ``PLUGIN_SERVICE_CONN`` and calls the runtime on
  ``RUNTIME_SERVICE_CONN``.

A reader thread feeds the socket's bytes through the demultiplexer into the two ttrpc state
machines. Requests are handled, one at a time and in arrival order, on a handler thread, so
a handler may itself make calls (RegisterPlugin is answered after the runtime has asked
Configure, for instance) while the reader keeps reading. ``call`` blocks its caller until
the answer, a timeout or the end of the connection.

Whatever the peer does (garbage, oversized frames, closing, hanging) ends in an RpcError for
the calls concerned and, for anything that breaks the trunk, in ``close``: the peer only
loses its own connection. Writes have a send timeout, so a peer that stops reading cannot
block us for longer than that.
"""
from __future__ import annotations

import contextlib
import logging
import queue
import socket
import struct
import threading
from collections.abc import Callable
from typing import TypeVar

from google.protobuf.message import DecodeError, Message

from nri import mux, ttrpc
from nri.ttrpc import Code, RpcError, Status

log = logging.getLogger(__name__)

M = TypeVar("M", bound=Message)
READ_SIZE = 1 << 16
SEND_TIMEOUT_SECONDS = 5.0


class _Waiter:
    __slots__ = ("done", "result")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.result: ttrpc.ResponseReceived | None = None


class Endpoint:
    def __init__(self, sock: socket.socket, *, serve_conn: int, call_conn: int,
                 router: ttrpc.Router, name: str = "nri",
                 on_close: Callable[[str], None] | None = None,
                 send_timeout: float = SEND_TIMEOUT_SECONDS) -> None:
        self.name = name
        self._sock = sock
        self._serve_conn = serve_conn
        self._call_conn = call_conn
        self._router = router
        self._on_close = on_close
        self._demux = mux.Demux([serve_conn, call_conn])
        self._server = ttrpc.ServerConnection()
        self._client = ttrpc.ClientConnection()
        self._lock = threading.Lock()  # the state machines, the waiters, and socket writes
        self._waiters: dict[int, _Waiter] = {}
        self._requests: queue.SimpleQueue[ttrpc.RequestReceived | None] = queue.SimpleQueue()
        self._closed = threading.Event()
        self.close_reason = ""
        sec = int(send_timeout)
        usec = int((send_timeout - sec) * 1_000_000)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", sec, usec))
        self._reader = threading.Thread(target=self._read_loop, name=f"{name}-read", daemon=True)
        self._handler = threading.Thread(target=self._handle_loop, name=f"{name}-handle",
                                         daemon=True)

    def start(self) -> None:
        self._reader.start()
        self._handler.start()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def wait_closed(self, timeout: float | None = None) -> bool:
        return self._closed.wait(timeout)

    # ------------------------------------------------------------ calling the peer

    def call(self, service: str, method: str, request: Message, response_type: type[M],
             timeout: float, grace: float = 0.0) -> M:
        """The peer's answer to one unary call; RpcError on an error status, a timeout
        (DEADLINE_EXCEEDED, fatal) or a lost connection (UNAVAILABLE, fatal). The request
        tells the peer `timeout`; the answer is awaited `grace` longer, so that a peer that
        gives up exactly at its deadline still gets its answer through."""
        waiter = _Waiter()
        with self._lock:
            if self._closed.is_set():
                raise RpcError(Status(Code.UNAVAILABLE, f"connection closed: {self.close_reason}"),
                               fatal=True)
            try:
                sid = self._client.send_request(service, method, request.SerializeToString(),
                                                timeout_ns=int(timeout * 1e9))
            except ValueError as e:
                raise RpcError(Status(Code.RESOURCE_EXHAUSTED, str(e))) from None
            self._waiters[sid] = waiter
            ok = self._write_locked(self._call_conn, self._client.frames_to_send())
        if not ok:
            self.close("write failed")
        if not waiter.done.wait(timeout + grace):
            with self._lock:
                self._client.cancel(sid)
                self._waiters.pop(sid, None)
            if not waiter.done.is_set():
                raise RpcError(Status(Code.DEADLINE_EXCEEDED,
                                      f"{method} got no answer within {timeout:g}s"), fatal=True)
        got = waiter.result
        assert got is not None
        err = got.error()
        if err is not None:
            raise err
        answer: M = response_type()
        try:
            answer.ParseFromString(got.payload)
        except DecodeError as e:
            raise RpcError(Status(Code.INTERNAL, f"malformed {method} answer: {e}"),
                           fatal=True) from None
        return answer

    # ------------------------------------------------------------ I/O

    def _write_locked(self, conn: int, frames: list[bytes]) -> bool:
        if not frames:
            return True
        try:
            self._sock.sendall(b"".join(mux.encode_message(conn, f) for f in frames))
        except OSError as e:
            log.info("%s: write failed: %s", self.name, e)
            return False
        return True

    def _read_loop(self) -> None:
        reason = "peer closed the connection"
        try:
            while True:
                try:
                    data = self._sock.recv(READ_SIZE)
                except OSError as e:
                    reason = f"read failed: {e}"
                    break
                if not data:
                    break
                if not self._received(data):
                    reason = "write failed"
                    break
        except mux.MuxError as e:
            reason = f"protocol error: {e}"
        finally:
            self.close(reason)
            self._sock.close()  # only here: no other thread is inside recv() any more

    def _received(self, data: bytes) -> bool:
        for conn, chunk in self._demux.feed(data):
            with self._lock:
                if conn == self._call_conn:
                    for got in self._client.receive_data(chunk):
                        waiter = self._waiters.pop(got.stream_id, None)
                        if waiter is not None:
                            waiter.result = got
                            waiter.done.set()
                    continue
                reqs = self._server.receive_data(chunk)
                ok = self._write_locked(self._serve_conn, self._server.frames_to_send())
            for req in reqs:
                self._requests.put(req)
            if not ok:
                return False
        return True

    def _handle_loop(self) -> None:
        while True:
            req = self._requests.get()
            if req is None:
                return
            payload, status = self._router.dispatch(req)
            with self._lock:
                if self._closed.is_set():
                    return
                self._server.send_response(req.stream_id, payload, status)
                ok = self._write_locked(self._serve_conn, self._server.frames_to_send())
            if not ok:
                self.close("write failed")

    def close(self, reason: str = "closed") -> None:
        with self._lock:
            if self._closed.is_set():
                return
            self.close_reason = reason
            self._closed.set()
            for got in self._client.connection_lost(reason):
                waiter = self._waiters.pop(got.stream_id, None)
                if waiter is not None:
                    waiter.result = got
                    waiter.done.set()
        self._requests.put(None)
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes the reader, which closes the socket
        log.debug("%s: connection closed (%s)", self.name, reason)
        if self._on_close is not None:
            try:
                self._on_close(reason)
            except Exception:
                log.exception("%s: on_close", self.name)
