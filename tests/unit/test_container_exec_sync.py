"""ExecSync's output handling (cap, drain, timeout) with a fake shim running local processes."""
from __future__ import annotations

import os
import signal
import subprocess
from typing import Any

import pytest

from cri_server.containers import exec_sync
from pycri_common.errors import DeadlineExceeded
from runtime.shim.protocol import ExecReply, ExecWaitReply


class FakeShim:
    """Runs the exec'd command as a local process on the fds it is given (like the shim)."""

    def __init__(self) -> None:
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.timed_out: set[str] = set()

    def exec(self, cid: str, process: dict[str, Any], fds: list[int]) -> ExecReply:
        proc = subprocess.Popen(process["args"], stdin=fds[0], stdout=fds[1], stderr=fds[2])
        eid = f"e{len(self.procs)}"
        self.procs[eid] = proc
        return ExecReply(eid, proc.pid)

    def exec_wait(self, eid: str, timeout: float | None = None) -> ExecWaitReply:
        proc = self.procs[eid]
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            self.timed_out.add(eid)
            return ExecWaitReply(137, True)
        return ExecWaitReply(code if code >= 0 else 128 - code, False)


def test_output_and_exit_code() -> None:
    out, err, code = exec_sync.run(FakeShim(), "c", ["sh", "-c", "echo o; echo e >&2; exit 9"], 5)
    assert (out, err, code) == (b"o\n", b"e\n", 9)


def test_output_is_capped_but_fully_drained() -> None:
    script = "head -c 300000 /dev/zero; head -c 10 /dev/zero >&2"
    out, err, code = exec_sync.run(FakeShim(), "c", ["sh", "-c", script], 5, max_output=1000)
    assert len(out) == 1000 and len(err) == 10 and code == 0   # the writer never blocked


def test_timeout_raises_deadline_exceeded() -> None:
    shim = FakeShim()
    with pytest.raises(DeadlineExceeded, match="timed out"):
        exec_sync.run(shim, "c", ["sleep", "30"], 0.3)
    assert shim.timed_out


def test_a_child_holding_the_pipe_does_not_block_the_result() -> None:
    # the command exits but leaves a background child with stdout open
    out, _, code = exec_sync.run(FakeShim(), "c", ["sh", "-c", "sleep 5 & echo $!; echo done"], 5)
    child, rest = out.split(b"\n", 1)
    os.kill(int(child), signal.SIGKILL)
    assert rest == b"done\n" and code == 0


def test_no_fd_leaks() -> None:
    before = len(os.listdir("/proc/self/fd"))
    exec_sync.run(FakeShim(), "c", ["true"], 5)
    assert len(os.listdir("/proc/self/fd")) == before


def test_exec_failure_closes_fds() -> None:
    class Broken(FakeShim):
        def exec(self, cid: str, process: dict[str, Any], fds: list[int]) -> ExecReply:
            raise RuntimeError("boom")

    before = len(os.listdir("/proc/self/fd"))
    with pytest.raises(RuntimeError):
        exec_sync.run(Broken(), "c", ["true"], 5)
    assert len(os.listdir("/proc/self/fd")) == before

