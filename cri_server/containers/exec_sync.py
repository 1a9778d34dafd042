"""ExecSync through the pod's shim: pipes for the output, a cap, a timeout.

The command runs with the container's namespaces, cgroup, user, capabilities,
seccomp, env and working dir (the shim's exec op). stdout and stderr are read
until the process has exited and the pipes are drained; each is capped at
MAX_OUTPUT bytes (the rest is read and dropped, so the command never blocks on a
full pipe). On timeout the shim kills the process and DeadlineExceeded is raised,
which kubelet turns into a probe timeout (as with containerd).
"""
from __future__ import annotations

import os
import selectors
import time
from typing import Any, Protocol

from pycri_common.errors import DeadlineExceeded
from runtime.shim.protocol import ExecWaitReply

MAX_OUTPUT = 16 * 1024 * 1024
# After the process exited, how long to keep reading output that a child it left
# behind may still hold open.
DRAIN_AFTER_EXIT = 0.5
# How long past the timeout the shim's answer may take before ExecSync gives up on it.
ANSWER_SLACK = 15.0
_EXIT = object()   # the selector key data of the exit's connection


class PendingExit(Protocol):
    """An exec's exit on its way (runtime.shim_client.PendingExec)."""

    reconnects: int

    def fileno(self) -> int: ...

    def read(self) -> ExecWaitReply | None: ...

    def close(self) -> None: ...


class ExecShim(Protocol):
    """What ExecSync needs of runtime.shim_client.ShimClient."""

    def exec_until_exit(self, container_id: str, process: dict[str, Any], fds: list[int],
                        timeout: float | None = None) -> PendingExit: ...


class _Capped:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.chunks: list[bytes] = []
        self.size = 0
        self.truncated = False

    def add(self, data: bytes) -> None:
        room = self.limit - self.size
        if room <= 0:
            self.truncated = True
            return
        if len(data) > room:
            data = data[:room]
            self.truncated = True
        self.chunks.append(data)
        self.size += len(data)

    def value(self) -> bytes:
        return b"".join(self.chunks)


def run(shim: ExecShim, container_id: str, cmd: list[str], timeout: float,
        max_output: int = MAX_OUTPUT) -> tuple[bytes, bytes, int]:
    """(stdout, stderr, exit code) of cmd in the container; DeadlineExceeded on timeout.
    One thread, one connection: the shim answers with the exit (exec with wait), read
    beside the outputs."""
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    null = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
    try:
        pending = shim.exec_until_exit(container_id, {"args": list(cmd), "tty": False},
                                       [null, out_w, err_w], timeout if timeout > 0 else None)
    except BaseException:
        for fd in (out_r, err_r):
            os.close(fd)
        raise
    finally:
        for fd in (null, out_w, err_w):
            os.close(fd)
    outputs = {out_r: _Capped(max_output), err_r: _Capped(max_output)}
    try:
        waited = _read_until_done(outputs, pending, timeout)
    finally:
        for fd in outputs:
            os.close(fd)
        pending.close()
    if waited.timed_out:
        raise DeadlineExceeded(f"command {' '.join(cmd)!r} timed out after {timeout:g}s "
                               "and was killed")
    return outputs[out_r].value(), outputs[err_r].value(), waited.exit_code


def _read_until_done(outputs: dict[int, _Capped], pending: PendingExit,
                     timeout: float) -> ExecWaitReply:
    """Reads the outputs and the exit; returns once the exit came and both outputs reached
    EOF, or DRAIN_AFTER_EXIT after the exit (a child the command left holds them)."""
    sel = selectors.DefaultSelector()
    # the shim kills the command at the timeout and answers: no answer long after that
    # means a stuck shim, not a slow command
    give_up = time.monotonic() + timeout + ANSWER_SLACK if timeout > 0 else None
    try:
        for fd in outputs:
            os.set_blocking(fd, False)
            sel.register(fd, selectors.EVENT_READ)
        exit_fd, reconnects = pending.fileno(), pending.reconnects
        sel.register(exit_fd, selectors.EVENT_READ, _EXIT)
        waited: ExecWaitReply | None = None
        drain_deadline = 0.0
        while True:
            now = time.monotonic()
            if waited is not None:
                if len(sel.get_map()) == 0 or now >= drain_deadline:
                    return waited
                wait: float | None = drain_deadline - now
            elif give_up is not None:
                if now >= give_up:
                    raise DeadlineExceeded(f"the shim did not report the end of the command "
                                           f"within {timeout + ANSWER_SLACK:g}s")
                wait = give_up - now
            else:
                wait = None
            for key, _ in sel.select(wait):
                if key.data is _EXIT:
                    waited = pending.read()
                    if pending.reconnects != reconnects:   # an older shim: exec_wait asked
                        sel.unregister(key.fd)
                        exit_fd, reconnects = pending.fileno(), pending.reconnects
                        sel.register(exit_fd, selectors.EVENT_READ, _EXIT)
                    if waited is not None:
                        sel.unregister(exit_fd)
                        drain_deadline = time.monotonic() + DRAIN_AFTER_EXIT
                    continue
                try:
                    data = os.read(key.fd, 65536)
                except BlockingIOError:
                    continue
                if data:
                    outputs[key.fd].add(data)
                else:
                    sel.unregister(key.fd)
    finally:
        sel.close()
