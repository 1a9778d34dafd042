"""A StreamingBackend that runs commands on the host, for streaming-server tests.

exec/attach start `cmd` (attach: the container id names a command in `attach_commands`)
as a host process in its own session, with pipes or a pty; port_forward connects to
127.0.0.1:<port>. Every call is recorded so tests can check kills, resizes, closes.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import signal
import socket
import struct
import subprocess
import termios
import threading
from collections.abc import Sequence


class HostSession:
    def __init__(self, backend: HostBackend, cmd: Sequence[str], tty: bool, stdin: bool,
                 stdout: bool, stderr: bool, size: tuple[int, int] | None = None) -> None:
        self.backend = backend
        self.cmd = list(cmd)
        self.tty = tty
        self.resizes: list[tuple[int, int]] = []
        self.initial_size = size
        self.killed = False
        self.closed = False
        self.stdin_closed = False
        self._fds: list[int] = []
        self.stdin: int | None = None
        self.stdout: int | None = None
        self.stderr: int | None = None
        if tty:
            master, slave = pty.openpty()
            if size:
                fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", size[1], size[0], 0, 0))
            try:
                self.proc = subprocess.Popen(self.cmd, stdin=slave, stdout=slave, stderr=slave,
                                             start_new_session=True)
            finally:
                os.close(slave)
            self._fds.append(master)
            self.stdin = master if stdin else None
            self.stdout = master
        else:
            self.proc = subprocess.Popen(
                self.cmd, stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                stdout=subprocess.PIPE if stdout else subprocess.DEVNULL,
                stderr=subprocess.PIPE if stderr else subprocess.DEVNULL,
                start_new_session=True)
            self.stdin = self.proc.stdin.fileno() if self.proc.stdin else None
            self.stdout = self.proc.stdout.fileno() if self.proc.stdout else None
            self.stderr = self.proc.stderr.fileno() if self.proc.stderr else None

    def close_stdin(self) -> None:
        self.stdin_closed = True
        if self.tty:
            with contextlib.suppress(OSError):
                os.write(self._fds[0], b"\x04")
        elif self.proc.stdin:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()

    def resize(self, width: int, height: int) -> None:
        self.resizes.append((width, height))
        if self.tty:
            fcntl.ioctl(self._fds[0], termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))

    def wait(self, timeout: float | None = None) -> int | None:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        return 128 - code if code < 0 else code

    def kill(self) -> None:
        self.killed = True
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    def close(self) -> None:
        self.closed = True
        if self.proc.poll() is None:
            # attach detaches; the fake "container" ends with its test
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if f is not None:
                with contextlib.suppress(OSError):
                    f.close()
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds.clear()


class HostBackend:
    def __init__(self) -> None:
        self.sessions: list[HostSession] = []
        self.attach_commands: dict[str, list[str]] = {}
        self.forwards: list[tuple[str, int]] = []
        self.lock = threading.Lock()
        self.fail_exec: str | None = None

    def exec(self, container_id: str, cmd: Sequence[str], tty: bool, stdin: bool,
             stdout: bool, stderr: bool, size: tuple[int, int] | None = None) -> HostSession:
        if self.fail_exec:
            from pycri_common.errors import FailedPrecondition
            raise FailedPrecondition(self.fail_exec)
        session = HostSession(self, cmd, tty, stdin, stdout, stderr, size)
        with self.lock:
            self.sessions.append(session)
        return session

    def attach(self, container_id: str, stdin: bool, stdout: bool, stderr: bool,
               tty: bool) -> HostSession:
        cmd = self.attach_commands[container_id]
        session = HostSession(self, cmd, tty, stdin, stdout, stderr)
        with self.lock:
            self.sessions.append(session)
        return session

    def port_forward(self, pod_sandbox_id: str, port: int) -> socket.socket:
        with self.lock:
            self.forwards.append((pod_sandbox_id, port))
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.settimeout(None)
        return sock
