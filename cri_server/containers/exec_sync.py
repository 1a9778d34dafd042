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
import threading
import time
from typing import Any, Protocol

from pycri_common.errors import DeadlineExceeded
from runtime.shim.protocol import ExecReply, ExecWaitReply

MAX_OUTPUT = 16 * 1024 * 1024
# After the process exited, how long to keep reading output that a child it left
# behind may still hold open.
DRAIN_AFTER_EXIT = 0.5


class ExecShim(Protocol):
    """What ExecSync needs of runtime.shim_client.ShimClient."""

    def exec(self, container_id: str, process: dict[str, Any], fds: list[int]) -> ExecReply: ...

    def exec_wait(self, exec_id: str, timeout: float | None = None) -> ExecWaitReply: ...


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
    """(stdout, stderr, exit code) of cmd in the container; DeadlineExceeded on timeout."""
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    null = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
    try:
        started = shim.exec(container_id, {"args": list(cmd), "tty": False}, [null, out_w, err_w])
    except BaseException:
        for fd in (out_r, err_r):
            os.close(fd)
        raise
    finally:
        for fd in (null, out_w, err_w):
            os.close(fd)
    exec_id = started.exec_id
    result: list[ExecWaitReply | BaseException] = []
    exited = threading.Event()

    def waiter() -> None:
        try:
            result.append(shim.exec_wait(exec_id, timeout if timeout > 0 else None))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            result.append(exc)
        finally:
            exited.set()

    thread = threading.Thread(target=waiter, name=f"execsync-{container_id[:12]}", daemon=True)
    thread.start()
    outputs = {out_r: _Capped(max_output), err_r: _Capped(max_output)}
    try:
        _read_until_done(outputs, exited)
    finally:
        for fd in outputs:
            os.close(fd)
    thread.join()
    waited = result[0]
    if isinstance(waited, BaseException):
        raise waited
    if waited.timed_out:
        raise DeadlineExceeded(f"command {' '.join(cmd)!r} timed out after {timeout:g}s "
                               "and was killed")
    return outputs[out_r].value(), outputs[err_r].value(), waited.exit_code


def _read_until_done(outputs: dict[int, _Capped], exited: threading.Event) -> None:
    sel = selectors.DefaultSelector()
    try:
        for fd in outputs:
            os.set_blocking(fd, False)
            sel.register(fd, selectors.EVENT_READ)
        drain_deadline: float | None = None
        while sel.get_map():
            if drain_deadline is None and exited.is_set():
                drain_deadline = time.monotonic() + DRAIN_AFTER_EXIT
            wait = 0.1 if drain_deadline is None else max(0.0, drain_deadline - time.monotonic())
            events = sel.select(wait)
            for key, _ in events:
                try:
                    data = os.read(key.fd, 65536)
                except BlockingIOError:
                    continue
                if data:
                    outputs[key.fd].add(data)
                else:
                    sel.unregister(key.fd)
            if drain_deadline is not None and not events and time.monotonic() >= drain_deadline:
                break
    finally:
        sel.close()
