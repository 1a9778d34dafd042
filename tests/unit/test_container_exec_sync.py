"""ExecSync's output handling (cap, drain, timeout) with a fake shim running local processes."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

from cri_server.containers import exec_sync
from pycri_common.errors import DeadlineExceeded
from runtime.shim_client import PendingExec, ShimClient


class FakeShim:
    """Runs the exec'd command as a local process on the fds it is given (like the shim) and
    answers its exit on a socket, as the shim answers an exec with wait."""

    def __init__(self, tmp: str = "/nonexistent") -> None:
        self.client = ShimClient(tmp)
        self.timed_out: list[bool] = []

    def exec_until_exit(self, cid: str, process: dict[str, Any], fds: list[int],
                        timeout: float | None = None) -> PendingExec:
        proc = subprocess.Popen(process["args"], stdin=fds[0], stdout=fds[1], stderr=fds[2])
        ours, theirs = socket.socketpair()

        def answer() -> None:
            try:
                code, timed_out = proc.wait(timeout), False
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                code, timed_out = 137, True
            self.timed_out.append(timed_out)
            theirs.sendall(json.dumps({"ok": True, "exit_code": code if code >= 0 else 128 - code,
                                       "timed_out": timed_out}).encode() + b"\n")
            theirs.close()

        threading.Thread(target=answer, daemon=True).start()
        ours.setblocking(False)
        return PendingExec(self.client, ours, timeout or 0.0)


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
    assert shim.timed_out == [True]


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
        def exec_until_exit(self, cid: str, process: dict[str, Any], fds: list[int],
                            timeout: float | None = None) -> PendingExec:
            raise RuntimeError("boom")

    before = len(os.listdir("/proc/self/fd"))
    with pytest.raises(RuntimeError):
        exec_sync.run(Broken(), "c", ["true"], 5)
    assert len(os.listdir("/proc/self/fd")) == before



def test_a_shim_without_exec_wait_field_gets_an_exec_wait(tmp_path: Path) -> None:
    """A shim from before exec's wait field answers ExecReply at once: ExecSync asks
    exec_wait on a second connection and reads the exit there."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(tmp_path / "shim.sock"))
    listener.listen(1)
    seen: list[dict[str, Any]] = []

    def old_shim() -> None:
        conn, _ = listener.accept()
        with conn:
            seen.append(json.loads(conn.recv(65536)))
        listener.close()

    server = threading.Thread(target=old_shim, daemon=True)
    server.start()
    client = ShimClient(str(tmp_path))
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    pending = PendingExec(client, ours, 5.0)
    theirs.sendall(b'{"ok": true, "exec_id": "e1", "pid": 42}\n')
    assert pending.read() is None and pending.reconnects == 1
    server.join(5)
    assert seen == [{"op": "exec_wait", "exec_id": "e1", "timeout": 5.0}]
    pending.close()
    theirs.close()


def test_an_error_answer_is_raised_and_a_closed_connection_is_unavailable() -> None:
    from pycri_common.errors import FailedPrecondition, Unavailable
    client = ShimClient("/nonexistent")
    for line, error in ((b'{"ok": false, "kind": "FailedPrecondition", "error": "gone"}\n',
                         FailedPrecondition), (b"", Unavailable)):
        ours, theirs = socket.socketpair()
        if line:
            theirs.sendall(line)
        theirs.close()
        with pytest.raises(error):
            PendingExec(client, ours, 0.0).read()
        ours.close()
