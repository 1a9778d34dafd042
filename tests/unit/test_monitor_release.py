"""Every way out of the monitor for a pod goes through one release (runtime.shim.monitor
Monitor._release, runtime.shim.server Shim.release): a failed adoption, drop_pod and a
finished shutdown leave the monitor's fds, loop callbacks and pods exactly as before the
pod; adopt's pipe copies are all or nothing."""
from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from pycri_common.errors import PycriError
from runtime import syscalls
from runtime.shim import adopt
from runtime.shim.loop import Loop
from runtime.shim.monitor import Monitor
from runtime.shim.records import Container

POD = "relpod"


class _Conn:
    """What Monitor._spawn replies to."""

    def __init__(self) -> None:
        self.closed = False
        self.replies: list[Any] = []

    def reply(self, obj: Any) -> None:
        self.replies.append(obj)

    def reply_error(self, err: PycriError) -> None:
        self.replies.append(err)


def _fds() -> set[int]:
    return {int(fd) for fd in os.listdir("/proc/self/fd")}


@pytest.fixture
def pod(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """A running pod as a dead monitor leaves it: pause.pid naming a live process whose
    command line is `pycri-pause <pod>` (sh reading a pipe), its ipc/uts namespaces 'pinned'."""
    shim_dir, ns_dir = tmp_path / POD, tmp_path / "ns" / POD
    (shim_dir / "containers").mkdir(parents=True)
    ns_dir.mkdir(parents=True)
    for t in ("ipc", "uts"):
        (ns_dir / t).touch()
    bin_dir = tmp_path / "bin"   # sh runs its argv[1] as a script: ./<pod> there
    bin_dir.mkdir()
    (bin_dir / POD).write_text("read x\n")
    pause = subprocess.Popen([adopt.PAUSE_COMM, POD], executable="/bin/sh", cwd=bin_dir,
                             stdin=subprocess.PIPE)
    (shim_dir / "pause.pid").write_text(str(pause.pid))
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pause.pid}/cmdline").read_bytes().split(b"\0")[:2] != \
            [adopt.PAUSE_COMM.encode(), POD.encode()]:
        assert time.monotonic() < deadline, "the stand-in pause-holder did not start"
        time.sleep(0.01)
    spec = {"pod_id": POD, "hostname": "relhost",
            "namespaces": {"network": "node", "ipc": "pod", "pid": "node"}, "sysctls": {},
            "shim_dir": str(shim_dir), "ns_dir": str(ns_dir), "cgroup": None,
            "log_level": "info"}
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    listener.bind(str(tmp_path / "monitor.sock"))
    listener.listen()
    monkeypatch.setenv(adopt.FAULT_ENV, "relhost")
    monkeypatch.setattr(adopt, "_faulted", set())
    try:
        yield {"spec": spec, "listener": listener, "pause": pause}
    finally:
        pause.kill()
        pause.wait()
        listener.close()


def _snapshot(monitor: Monitor) -> tuple[set[int], set[int], set[int], list[str], int]:
    loop = monitor.loop
    return (_fds(), set(loop._readers), set(loop._writers), sorted(monitor.pods),
            sum(not t.cancelled for _, _, t in loop._timers))


def test_a_failed_adoption_leaves_no_ghost_and_drop_pod_releases_all(
        pod: dict[str, Any]) -> None:
    monitor = Monitor(pod["listener"])
    before = _snapshot(monitor)
    failed = _Conn()
    monitor._spawn(failed, pod["spec"], adopt=True)  # type: ignore[arg-type]
    assert len(failed.replies) == 1 and isinstance(failed.replies[0], PycriError)
    assert "failing the first adoption" in str(failed.replies[0])
    assert _snapshot(monitor) == before       # no pause pidfd, listener or reader left
    assert not os.path.exists(os.path.join(pod["spec"]["shim_dir"], "shim.sock"))
    conn = _Conn()
    monitor._spawn(conn, pod["spec"], adopt=True)  # type: ignore[arg-type]  # the retry
    assert conn.replies and conn.replies[0]["pause_pid"] == pod["pause"].pid
    hp = monitor.pods[POD]
    assert hp.shim is not None and hp.shim.state.pause_pidfd >= 0
    monitor.loop.owner = hp
    monitor.loop.call_later(60, lambda: None)  # a timer of the pod's: goes with it
    monitor.loop.owner = None
    assert monitor.drop_pod(POD)
    assert _snapshot(monitor) == before
    assert pod["pause"].poll() is None        # nothing was signalled


def test_take_pipes_closes_what_it_took_when_a_copy_fails(
        monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def getfd(pidfd: int, fd: int) -> int:
        calls.append(fd)
        if len(calls) == 3:
            raise PermissionError(1, "pidfd_getfd")
        return os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)

    monkeypatch.setattr(syscalls, "pidfd_getfd", getfd)
    process = SimpleNamespace(tty=False, stdin=False, stdin_once=False)
    spec: Any = SimpleNamespace(process=process)   # what Container reads of a spec
    c = Container("c1", spec)
    loop = Loop()
    before = _fds()
    with pytest.raises(PermissionError):
        adopt._take_pipes(c, -1, loop)
    assert len(calls) == 3 and _fds() == before
    assert (c.exit_fd, c.outputs) == (-1, {})
