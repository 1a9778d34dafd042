"""Run an exec/attach session between a backend StreamSession and client channels.

Transport-neutral: SPDY streams and WebSocket channels both look like `InputChannel`
(read() -> bytes, b"" at end) and `OutputChannel` (write(), close()). The runner copies
stdin/stdout/stderr, applies resize messages, waits for the process (or the container,
for attach), then closes the output channels and writes the status on the error
channel. If the client goes away first (`client_gone` is set), an exec process is
killed (attach only detaches) and every pump is stopped and joined.
"""
from __future__ import annotations

import contextlib
import json
import logging
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from cri_server.streaming import k8s_protocols as kp
from cri_server.streaming.backend import StreamSession
from cri_server.streaming.fdio import StopSignal, read_fd, write_fd

log = logging.getLogger(__name__)

DRAIN_TIMEOUT = 2.0     # after exit, how long output may still be drained
_POLL = 0.2


class InputChannel(Protocol):
    def read(self, size: int = 65536, timeout: float | None = None) -> bytes:
        """Data; b"" at the end; TimeoutError when timeout passes first."""
        ...


class OutputChannel(Protocol):
    def write(self, data: bytes) -> None: ...

    def close(self) -> None: ...


@dataclass
class Channels:
    stdin: InputChannel | None = None
    stdout: OutputChannel | None = None
    stderr: OutputChannel | None = None
    error: OutputChannel | None = None
    resize: InputChannel | None = None


_JSON_SPACE = re.compile(r"[ \t\n\r]*")


def parse_resize_messages(buf: bytearray) -> list[tuple[int, int]]:
    """Consume complete JSON TerminalSize objects ({"Width","Height"}) from buf.

    The buffer is decoded once and walked (not re-decoded per message); surrogateescape keeps
    one character per undecodable byte, so the consumed text maps back to bytes exactly."""
    sizes: list[tuple[int, int]] = []
    decoder = json.JSONDecoder()
    text = buf.decode("utf-8", "surrogateescape")
    pos = 0
    while True:
        pos = _JSON_SPACE.match(text, pos).end()  # type: ignore[union-attr]
        if pos == len(text):
            buf.clear()
            return sizes
        try:
            obj, pos = decoder.raw_decode(text, pos)
        except (ValueError, RecursionError) as exc:  # ValueError: also int() of 5000 digits
            del buf[:len(text[:pos].encode("utf-8", "surrogateescape"))]
            if isinstance(exc, RecursionError) or len(buf) > 4096:  # never becomes valid
                buf.clear()
            return sizes
        if isinstance(obj, dict):
            lowered = {str(k).lower(): v for k, v in obj.items()}
            try:
                width, height = int(lowered.get("width", 0)), int(lowered.get("height", 0))
            except (TypeError, ValueError, OverflowError):   # OverflowError: Infinity
                continue
            if 0 <= width <= 0xFFFF and 0 <= height <= 0xFFFF:
                sizes.append((width, height))


def read_initial_size(channel: InputChannel, timeout: float
                      ) -> tuple[tuple[int, int] | None, bytearray]:
    """Wait (bounded) for the client's first terminal size; returns it and unparsed bytes.

    Clients send the size as soon as the resize stream is up; starting the command with
    the right size avoids a `stty size` / full-screen program seeing 0x0.
    """
    buf = bytearray()
    deadline = time.monotonic() + timeout
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            data = channel.read(65536, timeout=remaining)
        except TimeoutError:
            break
        if not data:
            break
        buf += data
        sizes = parse_resize_messages(buf)
        if sizes:
            return sizes[-1], buf
    return None, buf


class SessionRunner:
    """Copies data for one exec/attach session; `run()` returns when it is over."""

    def __init__(self, session: StreamSession, channels: Channels, protocol: str,
                 cmd: Sequence[str], is_exec: bool, client_gone: threading.Event,
                 name: str = "pycri-stream", resize_buffer: bytearray | None = None) -> None:
        self.session = session
        self.ch = channels
        self.protocol = protocol
        self.cmd = list(cmd)
        self.is_exec = is_exec
        self.client_gone = client_gone
        self.name = name
        self.stop = StopSignal()
        self._threads: list[threading.Thread] = []
        self._outputs_done: list[threading.Event] = []
        self._resize_buffer = resize_buffer or bytearray()

    def _spawn(self, target: object, *args: object, suffix: str) -> threading.Thread:
        t = threading.Thread(target=target, args=args, name=f"{self.name}-{suffix}",  # type: ignore[arg-type]
                             daemon=True)
        self._threads.append(t)
        t.start()
        return t

    # ---------------------------------------------------------------- pumps

    def _pump_output(self, fd: int, channel: OutputChannel, done: threading.Event) -> None:
        try:
            while True:
                data = read_fd(fd, self.stop)
                if not data:
                    return
                channel.write(data)
        except (OSError, ConnectionError):
            return
        finally:
            done.set()

    def _pump_stdin(self, channel: InputChannel, fd: int) -> None:
        try:
            while not self.stop.is_set():
                data = channel.read()
                if not data:
                    break
                if not write_fd(fd, data, self.stop):
                    return
            if not self.stop.is_set() and not self.client_gone.is_set():
                self.session.close_stdin()
        except (OSError, ConnectionError):
            return

    def _pump_resize(self, channel: InputChannel) -> None:
        buf = self._resize_buffer
        try:
            for width, height in parse_resize_messages(buf):
                self.session.resize(width, height)
            while not self.stop.is_set():
                data = channel.read()
                if not data:
                    return
                buf += data
                for width, height in parse_resize_messages(buf):
                    self.session.resize(width, height)
        except (OSError, ConnectionError):
            return
        except Exception:  # a failing resize must not end the session
            log.exception("%s: resize failed", self.name)

    # ---------------------------------------------------------------- run

    def run(self) -> int | None:
        """Returns the exit code, or None if the client went away first."""
        s, ch = self.session, self.ch
        try:
            if ch.stdin is not None and s.stdin is not None:
                self._spawn(self._pump_stdin, ch.stdin, s.stdin, suffix="stdin")
            for fd, out, suffix in ((s.stdout, ch.stdout, "stdout"),
                                    (s.stderr, ch.stderr, "stderr")):
                if fd is not None and out is not None:
                    done = threading.Event()
                    self._outputs_done.append(done)
                    self._spawn(self._pump_output, fd, out, done, suffix=suffix)
            if ch.resize is not None:
                self._spawn(self._pump_resize, ch.resize, suffix="resize")

            exit_code = None
            while exit_code is None and not self.client_gone.is_set():
                exit_code = s.wait(_POLL)
            if exit_code is None:
                # The client is gone mid-stream: end the process (exec) or detach (attach).
                if self.is_exec:
                    with contextlib.suppress(Exception):
                        s.kill()
                return None
            for done in self._outputs_done:
                done.wait(DRAIN_TIMEOUT)
            self.stop.set()
            self._finish(exit_code)
            return exit_code
        finally:
            self.stop.set()

    def _finish(self, exit_code: int) -> None:
        for out in (self.ch.stdout, self.ch.stderr):
            if out is not None:
                with contextlib.suppress(OSError, ConnectionError):
                    out.close()
        code = exit_code if self.is_exec else 0
        self.write_status(kp.status_message(self.protocol, code, self.cmd))

    def write_status(self, message: bytes) -> None:
        if self.ch.error is None:
            return
        with contextlib.suppress(OSError, ConnectionError):
            if message:
                self.ch.error.write(message)
            self.ch.error.close()

    def join(self, timeout: float = 5.0) -> None:
        """After the transport is closed: join every pump and release the fds."""
        self.stop.set()
        stuck = []
        for t in self._threads:
            t.join(timeout)
            if t.is_alive():
                stuck.append(t.name)
        if stuck:
            # Leave the fds open rather than let a stuck thread touch a reused fd number.
            log.warning("%s: threads %s did not stop", self.name, stuck)
            return
        with contextlib.suppress(Exception):
            self.session.close()
        self.stop.close()
