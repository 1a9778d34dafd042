"""The keeper program alone (runtime/keeper/keeper.c): it reaps the pid it is told, records
the wait status atomically, closes its exit pipe, ignores SIGTERM until then and exits on it
afterwards; without a pid it records nothing and exits 1."""
from __future__ import annotations

import fcntl
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime import keeper
from tests.integration.shim_support import wait_gone


def _high(fd: int) -> int:
    new = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 30)
    os.close(fd)
    return new


class Launched:
    def __init__(self, tmp: Path, child_script: str | None, extra_wait: float = 0.0) -> None:
        """Fork; the parent execs the keeper, the child (what the init would be) writes its
        pid on the pid pipe unless child_script is None (set-up failure), then runs
        child_script: "exit N", "kill" (SIGKILL itself) or "wait" (until SIGTERM -> 5)."""
        self.exit_path = str(tmp / "c.exit")
        pid_r, pid_w = map(_high, os.pipe())
        self.exit_r, exit_w = map(_high, os.pipe())
        self.pid = os.fork()
        if self.pid == 0:  # pragma: no cover - forked
            try:
                child = os.fork()
                if child == 0:
                    os.close(pid_r)
                    if child_script is None:
                        os._exit(1)
                    os.write(pid_w, str(os.getpid()).encode())
                    os.close(pid_w)
                    if child_script.startswith("exit"):
                        time.sleep(extra_wait)
                        os._exit(int(child_script.split()[1]))
                    if child_script == "kill":
                        os.kill(os.getpid(), signal.SIGKILL)
                    from runtime import syscalls
                    syscalls.set_pdeathsig(signal.SIGKILL)  # gone with the keeper (close())
                    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
                    signal.sigwait({signal.SIGTERM})
                    os._exit(5)
                for target, fd in ((3, pid_r), (4, exit_w), (5, self.exit_r)):
                    os.dup2(fd, target, inheritable=True)
                os.execv(keeper.binary(), [keeper.COMM, "cid1", self.exit_path])
            finally:
                os._exit(127)
        os.close(pid_r)
        os.close(pid_w)
        os.close(exit_w)

    def wait_exit_pipe(self, timeout: float = 10.0) -> None:
        os.set_blocking(self.exit_r, True)
        import select
        assert select.select([self.exit_r], [], [], timeout)[0], "no EOF on the exit pipe"
        assert os.read(self.exit_r, 10) == b""

    def record(self) -> dict[str, int]:
        rec = keeper.read_exit(self.exit_path)
        assert rec is not None
        return rec

    def close(self) -> None:
        os.close(self.exit_r)
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass


@pytest.fixture
def launched(tmp_path: Path) -> Iterator[list[Launched]]:
    made: list[Launched] = []
    yield made
    for k in made:
        k.close()


def test_records_exit_code_and_then_exits_on_sigterm(tmp_path: Path,
                                                     launched: list[Launched]) -> None:
    k = Launched(tmp_path, "exit 7", extra_wait=0.3)
    launched.append(k)
    deadline = time.monotonic() + 5
    while os.readlink(f"/proc/{k.pid}/exe") != keeper.binary():  # exec'd (the fork is Python)
        assert time.monotonic() < deadline
        time.sleep(0.005)
    time.sleep(0.05)  # past its first instruction: the mask is set at once
    os.kill(k.pid, signal.SIGTERM)  # blocked until the exit is recorded
    time.sleep(0.1)
    assert os.waitpid(k.pid, os.WNOHANG) == (0, 0)
    k.wait_exit_pipe()
    rec = k.record()
    assert os.WIFEXITED(rec["status"]) and os.WEXITSTATUS(rec["status"]) == 7
    assert abs(rec["finished_at"] - time.time_ns()) < 10 * 10**9
    assert not os.path.exists(k.exit_path + ".tmp")
    _, status = os.waitpid(k.pid, 0)  # the pending SIGTERM ends it once recorded
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM


def test_records_a_signal_death(tmp_path: Path, launched: list[Launched]) -> None:
    k = Launched(tmp_path, "kill")
    launched.append(k)
    k.wait_exit_pipe()
    rec = k.record()
    assert os.WIFSIGNALED(rec["status"]) and os.WTERMSIG(rec["status"]) == signal.SIGKILL
    assert json.loads(Path(k.exit_path).read_text())["pid"] == rec["pid"] > 0


def test_without_a_pid_nothing_is_recorded_and_it_exits_1(tmp_path: Path,
                                                           launched: list[Launched]) -> None:
    k = Launched(tmp_path, None)
    launched.append(k)
    _, status = os.waitpid(k.pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 1
    assert not os.path.exists(k.exit_path)


def test_is_small_and_static(tmp_path: Path, launched: list[Launched]) -> None:
    k = Launched(tmp_path, "wait")
    launched.append(k)
    time.sleep(0.2)
    with open(f"/proc/{k.pid}/smaps_rollup") as f:
        pss = next(int(ln.split()[1]) for ln in f if ln.startswith("Pss:"))
    assert pss <= 64, f"a keeper costs {pss} kB PSS"
    assert os.readlink(f"/proc/{k.pid}/exe") == keeper.binary()
    with open(f"/proc/{k.pid}/maps") as f:
        assert ".so" not in f.read()  # no libc, no loader
    assert not wait_gone([k.pid], timeout=0.2)
