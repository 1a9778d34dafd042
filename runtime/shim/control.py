"""One client connection on the shim's control socket.

Requests are JSON lines, possibly carrying fds (SCM_RIGHTS) on the same
sendmsg; replies are JSON lines. One outstanding request per connection: lines
that arrive while a reply is pending are queued. After a successful "attach"
the connection turns into a frame stream (runtime.shim.frames).
"""
from __future__ import annotations

import array
import json
import os
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

from pycri_common.errors import InvalidArgument, PycriError
from runtime import arglimits
from runtime.shim import frames
from runtime.shim.loop import BufferedWriter, Loop
from runtime.shim.protocol import Reply, error_to_json

#: The longest request line accepted (bytes, the newline not counted). The daemon's largest
#: legitimate request is a create whose argv + env fill the kernel's exec limit (at most
#: arglimits.ARG_MAX_CAP) with characters JSON writes as \u00XX (6 bytes each), plus the rest
#: of the spec; the daemon refuses to send a longer one (runtime.shim_client).
MAX_LINE = 6 * arglimits.ARG_MAX_CAP + (8 << 20)
MAX_FDS = 8
#: bytes queued for one client before further attach output to it is dropped
OUTPUT_LIMIT = 2 << 20
_RECV = 65536
_ANC = socket.CMSG_SPACE(MAX_FDS * array.array("i").itemsize)


_accept_error_told = -1e9  # when accept()'s last error was logged (once per 10 s)

Handler = Callable[["Connection", dict[str, Any], list[int]], "Reply | dict[str, Any] | None"]


def accept(loop: Loop, listener: socket.socket, handle: Handler,
           on_close: Callable[[Connection], None]) -> Connection | None:
    """The next client of a non-blocking listener as a Connection (None: nobody waits)."""
    try:
        sock, _ = listener.accept()
    except (BlockingIOError, InterruptedError):
        return None
    except OSError as e:  # EMFILE, ECONNABORTED...: the listener stays; the client retries
        global _accept_error_told
        now = time.monotonic()
        if now - _accept_error_told > 10.0:
            _accept_error_told = now
            print(f"accept on {listener.getsockname()!r}: {e}", file=sys.stderr)
        return None
    sock.setblocking(False)
    return Connection(loop, sock, handle, on_close)


class Connection:
    def __init__(self, loop: Loop, sock: socket.socket, handle: Handler,
                 on_close: Callable[[Connection], None]) -> None:
        self.loop = loop
        self.sock = sock
        self.fd = sock.fileno()
        self._handle = handle
        self._on_close = on_close
        self._inbuf = bytearray()
        self._scanned = 0  # bytes of _inbuf known to hold no newline
        self._fds: list[int] = []
        self._lines: list[tuple[bytes, list[int]]] = []
        self.pending = False
        self.closed = False
        self.out = BufferedWriter(loop, self.fd, limit=OUTPUT_LIMIT, on_error=lambda e: self.close(),
                                  close_fd=False)
        # attach mode
        self.frame_handler: Callable[[Connection, int, bytes], None] | None = None
        self._decoder: frames.FrameDecoder | None = None
        self.used_stdin = False  # sent stdin frames (stdin_once: its end closes stdin)
        loop.add_reader(self.fd, self._on_readable)

    # --- input ------------------------------------------------------------------
    def _on_readable(self) -> None:
        try:
            data, anc, flags, _ = self.sock.recvmsg(_RECV, _ANC, socket.MSG_CMSG_CLOEXEC)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close()
            return
        for level, typ, payload in anc:
            if level == socket.SOL_SOCKET and typ == socket.SCM_RIGHTS:
                fds = array.array("i")
                fds.frombytes(payload[: len(payload) - (len(payload) % fds.itemsize)])
                self._fds.extend(fds)
        if flags & socket.MSG_CTRUNC:
            self._close_fds()
        if not data:
            self.close()
            return
        if self._decoder is not None:
            self._feed_frames(data)
            return
        self._inbuf += data
        self._split_lines()
        self._next()

    def _split_lines(self) -> None:
        while True:
            nl = self._inbuf.find(b"\n", self._scanned)
            if nl < 0 and len(self._inbuf) <= MAX_LINE:
                self._scanned = len(self._inbuf)  # a long line is scanned once, not per chunk
                break
            if nl < 0 or nl > MAX_LINE:
                self.reply_error(InvalidArgument(f"request line longer than {MAX_LINE} bytes"))
                self.close()
                break
            line = bytes(self._inbuf[:nl])
            del self._inbuf[: nl + 1]
            self._scanned = 0
            fds, self._fds = self._fds, []
            self._lines.append((line, fds))

    def _next(self) -> None:
        while self._lines and not self.pending and not self.closed and self._decoder is None:
            line, fds = self._lines.pop(0)
            if not line.strip():
                continue
            try:
                req = json.loads(line)
            except (ValueError, RecursionError) as e:  # RecursionError: nested too deep
                req = f"bad request: {e}"
            if not isinstance(req, dict):
                for fd in fds:
                    os.close(fd)
                self.reply_error(InvalidArgument(
                    req if isinstance(req, str) else "request is not a JSON object"))
                continue
            self.pending = True
            try:
                result = self._handle(self, req, fds)
            except PycriError as e:
                self.reply_error(e)
                continue
            except Exception as e:  # noqa: BLE001 - reported to the client, shim keeps serving
                self.reply_error(PycriError(f"{type(e).__name__}: {e}"))
                continue
            if result is not None:
                self.reply(result)

    def _feed_frames(self, data: bytes) -> None:
        assert self._decoder is not None
        try:
            got = self._decoder.feed(data)
        except frames.FrameError:
            self.close()
            return
        for stream, payload in got:
            if self.closed or self.frame_handler is None:
                return
            self.frame_handler(self, stream, payload)

    # --- output -----------------------------------------------------------------
    def reply(self, obj: Reply | dict[str, Any]) -> None:
        if self.closed:
            return
        msg: dict[str, Any] = {"ok": True}
        msg.update(obj if isinstance(obj, dict) else obj.to_json())
        self.pending = False
        self.out.write(json.dumps(msg).encode() + b"\n")
        if not self.pending:
            self._next()

    def reply_error(self, err: PycriError) -> None:
        """The error reply: its class name as the kind (protocol.error_to_json)."""
        if self.closed:
            return
        self.pending = False
        self.out.write(json.dumps(error_to_json(err)).encode() + b"\n")

    def enter_attach_mode(self, handler: Callable[[Connection, int, bytes], None]) -> None:
        """Switch to frames; called right after the ok reply to "attach" was queued."""
        self.frame_handler = handler
        self._decoder = frames.FrameDecoder()
        rest = bytes(self._inbuf)
        self._inbuf.clear()
        self._scanned = 0
        self._lines.clear()
        if rest:
            self._feed_frames(rest)

    def resume_reading(self) -> None:
        if not self.closed:
            self.loop.add_reader(self.fd, self._on_readable)

    def send_frame(self, stream: int, payload: bytes) -> bool:
        if self.closed:
            return False
        # the exit frame is never dropped, even for a client that fell behind
        return self.out.write(frames.encode(stream, payload), force=stream == frames.EXITED)

    def finish(self) -> None:
        """Close once everything queued is sent."""
        if self.closed:
            return
        if self.out.queued:
            self.loop.remove_reader(self.fd)
            self.out._on_closed = self.close
            self.out.close_when_flushed()
        else:
            self.close()

    def _close_fds(self) -> None:
        for fd in self._fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self._fds = []

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._close_fds()
        for _, fds in self._lines:
            for fd in fds:
                os.close(fd)
        self._lines.clear()
        self.loop.forget(self.fd)
        self.out.close()
        self.sock.close()
        self._on_close(self)
