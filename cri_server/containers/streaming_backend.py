"""The streaming server's backend (cri_server.streaming.backend) over the pod shims.

- exec: the shim's exec op with fds made here: a pty pair (the slave goes to the
  shim, the master stays for I/O and resize) or pipes; a thread waits for the exit.
- attach: the shim's attach frame stream, bridged to pipes the streaming server
  reads and writes (one thread per direction).
- port-forward: a socket connected to localhost:<port> inside the pod's network
  namespace (streaming.netns_socket).
"""
from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import pty
import signal
import socket
import struct
import termios
import threading
import time
from collections.abc import Sequence
from typing import Any

from cri_server.streaming.netns_socket import connect_in_netns
from pycri_common.errors import FailedPrecondition, InvalidArgument
from runtime.shim import frames
from runtime.shim.protocol import ContainerState
from runtime.shim_client import ShimClient

log = logging.getLogger(__name__)


def _close(fd: int | None) -> None:
    if fd is not None and fd >= 0:
        with contextlib.suppress(OSError):
            os.close(fd)


TIOCGPTPEER = 0x5441
TIOCSPTLCK = 0x40045431
_PTMX_RDEV = os.makedev(5, 2)


def open_container_pty(container_pid: int) -> tuple[int, int]:
    """(master, slave) of a new pty in the container's own devpts instance.

    The slave then has a name inside the container (/dev/pts/N), so `tty` and ttyname()
    work there. /dev and /dev/pts are mount points in the container (it cannot swap them
    for symlinks), the last component is opened without following links, and the node
    must be a ptmx that is not the host's. Falls back to a host pty if any check fails.
    """
    try:
        host_devpts = os.stat("/dev/pts/ptmx").st_dev
        master = os.open(f"/proc/{container_pid}/root/dev/pts/ptmx",
                         os.O_RDWR | os.O_NOCTTY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return _host_pty()
    try:
        st = os.fstat(master)
        if st.st_rdev != _PTMX_RDEV or st.st_dev == host_devpts:
            raise OSError("not the container's ptmx")
        fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 0))
        slave = fcntl.ioctl(master, TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
        return master, int(slave)
    except OSError:
        os.close(master)
        return _host_pty()


def _host_pty() -> tuple[int, int]:
    master, slave = pty.openpty()
    os.set_inheritable(master, False)
    os.set_inheritable(slave, False)
    return master, slave


def _set_winsize(fd: int, width: int, height: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))


class ExecSession:
    """One streaming exec: the process runs in the container until it exits or is killed."""

    def __init__(self, shim: ShimClient, container_id: str, cmd: Sequence[str], tty: bool,
                 stdin: bool, stdout: bool, stderr: bool, container_pid: int = 0) -> None:
        self._shim = shim
        self.tty = tty
        self.stdin: int | None = None
        self.stdout: int | None = None
        self.stderr: int | None = None
        self._master = -1
        self._exit: int | None = None
        self._done = threading.Event()
        passed: list[int] = []
        try:
            if tty:
                master, slave = (open_container_pty(container_pid) if container_pid
                                 else _host_pty())
                self._master = master
                passed = [slave]
                self.stdout = os.dup(master)
                if stdin:
                    self.stdin = os.dup(master)
            else:
                passed = self._pipes(stdin, stdout, stderr)
            reply = shim.exec(container_id, {"args": list(cmd), "tty": tty}, passed)
        except BaseException:
            self.close()
            raise
        finally:
            for fd in passed:
                _close(fd)
        self.exec_id = reply.exec_id
        self.pid = reply.pid
        self._waiter = threading.Thread(target=self._wait_exit, daemon=True,
                                        name=f"exec-wait-{self.exec_id}")
        self._waiter.start()

    def _pipes(self, stdin: bool, stdout: bool, stderr: bool) -> list[int]:
        passed: list[int] = []
        if stdin:
            r, w = os.pipe2(os.O_CLOEXEC)
            self.stdin = w
            passed.append(r)
        else:
            passed.append(os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC))
        for wanted, attr in ((stdout, "stdout"), (stderr, "stderr")):
            if wanted:
                r, w = os.pipe2(os.O_CLOEXEC)
                setattr(self, attr, r)
                passed.append(w)
            else:
                passed.append(os.open("/dev/null", os.O_WRONLY | os.O_CLOEXEC))
        return passed

    def _wait_exit(self) -> None:
        try:
            self._exit = self._shim.exec_wait(self.exec_id, None).exit_code
        except Exception:  # noqa: BLE001 - the shim went away: report a failure
            self._exit = 255
        finally:
            self._done.set()

    def close_stdin(self) -> None:
        if self.tty:
            if self.stdin is not None:
                with contextlib.suppress(OSError):
                    os.write(self.stdin, b"\x04")
            return
        fd, self.stdin = self.stdin, None
        _close(fd)

    def resize(self, width: int, height: int) -> None:
        if self._master >= 0 and width > 0 and height > 0:
            _set_winsize(self._master, width, height)

    def wait(self, timeout: float | None = None) -> int | None:
        self._done.wait(timeout)
        return self._exit if self._done.is_set() else None

    def kill(self) -> None:
        if not self._done.is_set():
            with contextlib.suppress(Exception):
                self._shim.exec_kill(self.exec_id, int(signal.SIGKILL))

    def close(self) -> None:
        for attr in ("stdin", "stdout", "stderr"):
            fd = getattr(self, attr)
            setattr(self, attr, None)
            _close(fd)
        master, self._master = self._master, -1
        _close(master)


class AttachSession:
    """The container's own stdio through the shim's attach stream."""

    def __init__(self, shim: ShimClient, container_id: str, stdin: bool, stdout: bool, stderr: bool,
                 tty: bool) -> None:
        self._stream = shim.attach(container_id)
        self.tty = tty
        self.stdin: int | None = None
        self.stdout: int | None = None
        self.stderr: int | None = None
        self._stdin_r = -1
        self._out_w: dict[int, int] = {}
        self._exit: int | None = None
        self._done = threading.Event()
        self._closed = threading.Event()
        self._send_lock = threading.Lock()
        try:
            if stdin:
                self._stdin_r, self.stdin = os.pipe2(os.O_CLOEXEC)
            if stdout:
                self.stdout, self._out_w[frames.STDOUT] = os.pipe2(os.O_CLOEXEC)
            if stderr and not tty:
                self.stderr, self._out_w[frames.STDERR] = os.pipe2(os.O_CLOEXEC)
        except BaseException:
            self.close()
            raise
        threading.Thread(target=self._pump_out, daemon=True, name="attach-out").start()
        self._stdin_pump: threading.Thread | None = None
        if self._stdin_r >= 0:
            self._stdin_pump = threading.Thread(target=self._pump_in, daemon=True,
                                                name="attach-in")
            self._stdin_pump.start()

    def _pump_out(self) -> None:
        try:
            while True:
                frame = self._stream.recv_frame(None)
                if frame is None:
                    break
                stream, payload = frame
                if stream == frames.EXITED:
                    with contextlib.suppress(InvalidArgument):
                        self._exit = ContainerState.from_frame(payload).exit_code
                    break
                fd = self._out_w.get(stream)
                if stream == frames.STDERR and fd is None and self.tty:
                    fd = self._out_w.get(frames.STDOUT)
                if fd is not None:
                    view = memoryview(payload)
                    while view:
                        view = view[os.write(fd, view):]
        except Exception as exc:  # noqa: BLE001 - stream closed or reader gone
            log.debug("attach output ended: %s", exc)
        finally:
            for fd in list(self._out_w.values()):
                _close(fd)
            self._out_w.clear()
            if self._exit is None:
                self._exit = 0  # detached, or the shim went away
            self._done.set()

    def _pump_in(self) -> None:
        """Client input -> stdin frames; at the end of the input, a stdin-close frame (the
        shim closes the container's stdin if it was created with stdin_once)."""
        try:
            while True:
                data = os.read(self._stdin_r, 65536)
                if not data:
                    break
                with self._send_lock:
                    self._stream.send_stdin(data)
        except OSError:
            return
        with contextlib.suppress(OSError), self._send_lock:
            self._stream.close_stdin()

    def close_stdin(self) -> None:
        """End of the client's input: closing the pipe lets _pump_in forward what is still
        in it before it sends the close (so the close never overtakes data)."""
        fd, self.stdin = self.stdin, None
        _close(fd)

    def resize(self, width: int, height: int) -> None:
        if self.tty and width > 0 and height > 0:
            with contextlib.suppress(OSError), self._send_lock:
                self._stream.resize(width, height)

    def wait(self, timeout: float | None = None) -> int | None:
        self._done.wait(timeout)
        return self._exit if self._done.is_set() else None

    def kill(self) -> None:
        """Attach never kills the container: detaching is close()."""

    def close(self) -> None:
        self._closed.set()
        if self.stdin is not None:   # detaching ends this client's input (stdin_once)
            self.close_stdin()
            deadline = time.monotonic() + 1.0
            while self._stdin_pump is not None and self._stdin_pump.is_alive() \
                    and time.monotonic() < deadline:
                self._stdin_pump.join(0.05)
        with contextlib.suppress(OSError):
            self._stream.sock.shutdown(socket.SHUT_RDWR)
        self._stream.close()
        for attr in ("stdin", "stdout", "stderr"):
            fd = getattr(self, attr)
            setattr(self, attr, None)
            _close(fd)
        fd, self._stdin_r = self._stdin_r, -1
        _close(fd)


class ContainerStreamingBackend:
    """StreamingBackend for cri_server.streaming.StreamingServer."""

    def __init__(self, containers: Any, sandboxes: Any) -> None:
        self.containers = containers
        self.sandboxes = sandboxes

    def exec(self, container_id: str, cmd: Sequence[str], tty: bool, stdin: bool,
             stdout: bool, stderr: bool) -> ExecSession:
        if not cmd:
            raise InvalidArgument("exec needs a command")
        rec, shim = self.containers.exec_target(container_id, list(cmd), "exec")
        return ExecSession(shim, rec.id, cmd, tty, stdin, stdout, stderr, rec.pid)

    def attach(self, container_id: str, stdin: bool, stdout: bool, stderr: bool,
               tty: bool) -> AttachSession:
        rec, shim = self.containers.running_container(container_id, "attach")
        if stdin and not rec.stdin:
            raise FailedPrecondition(f"container {rec.id} was not created with stdin; "
                                     "attach without stdin")
        return AttachSession(shim, rec.id, stdin, stdout, stderr, tty and rec.tty)

    def port_forward(self, pod_sandbox_id: str, port: int) -> socket.socket:
        netns = self.containers.pod_netns(pod_sandbox_id)
        try:
            return connect_in_netns(netns, "127.0.0.1", port)
        except ConnectionRefusedError:
            return connect_in_netns(netns, "::1", port)
