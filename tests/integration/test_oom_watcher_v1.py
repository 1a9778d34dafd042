"""runtime.shim.oom's cgroup v1 OOM watcher against this host's memory controller (root):
an OOM in a watched cgroup is remembered even once the cgroup is gone (as systemd removes an
emptied scope before the shim sees the exit), and the cgroup's removal alone is no OOM."""
from __future__ import annotations

import gc
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator

import pytest

from runtime import cgroups
from runtime.cgroups.mode import detect_mode
from runtime.container_spec import ContainerSpec
from runtime.shim import oom
from runtime.shim.loop import Loop
from runtime.shim.records import Container

pytestmark = [pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
              pytest.mark.skipif(detect_mode() == "v2", reason="the watcher is cgroup v1's")]

_HOG = "b = b'x' * (300 << 20)"


@pytest.fixture
def watched() -> Iterator[tuple[Loop, Container, str]]:
    path = f"/pycri-test-oomwatch-{os.getpid()}"
    cg = cgroups.create_cgroup(path, {"memory_limit_in_bytes": 24 << 20})
    assert isinstance(cg, cgroups.V1Cgroup)
    spec = ContainerSpec.from_json({
        "id": "w", "rootfs": {"lower": ["/l"], "upper": "/c/upper", "work": "/c/work"},
        "process": {"args": ["sh"]}, "cgroup": {"driver": "cgroupfs", "path": path}})
    gc.collect()  # an earlier test's loop (its epoll fd) must not be closed during this one
    c, loop = Container("w", spec), Loop()
    fds = len(os.listdir("/proc/self/fd"))
    oom.watch(loop, c)
    assert c.oom_efd >= 0
    try:
        yield loop, c, str(cg.dir("memory"))
    finally:
        oom.unwatch(loop, c)
        if cg.exists():
            cgroups.remove_cgroup(path)
    assert len(os.listdir("/proc/self/fd")) == fds  # no fd left open


def _run_in(memory_dir: str, code: str) -> subprocess.Popen[bytes]:
    script = f"echo $$ > {memory_dir}/cgroup.procs && exec python3 -c \"{code}\""
    return subprocess.Popen(["sh", "-c", script])


def _procs(memory_dir: str) -> str:
    with open(os.path.join(memory_dir, "cgroup.procs")) as f:
        return f.read()


def _run_loop_until(loop: Loop, done: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        loop.call_later(0.05, lambda: None)
        loop.run_once()
    assert done()


def test_oom_seen_survives_the_cgroups_removal(watched: tuple[Loop, Container, str]) -> None:
    loop, c, memory_dir = watched
    hog = _run_in(memory_dir, _HOG)
    _run_loop_until(loop, lambda: c.oom_seen)
    assert hog.wait(30) == -signal.SIGKILL
    cgroups.remove_cgroup(c.spec.cgroup.path)  # type: ignore[union-attr]
    assert not os.path.isdir(memory_dir)
    assert not oom.oom_kill_count(c.spec)  # the count alone can no longer tell
    assert oom.was_oom_killed(loop, c, signal.SIGKILL)
    assert c.oom_efd == -1  # the watch ended at the exit


def test_removal_alone_is_no_oom(watched: tuple[Loop, Container, str]) -> None:
    loop, c, memory_dir = watched
    sleeper = _run_in(memory_dir, "import time; time.sleep(60)")
    _run_loop_until(loop, lambda: _procs(memory_dir) != "")
    sleeper.kill()
    assert sleeper.wait(30) == -signal.SIGKILL
    cgroups.remove_cgroup(c.spec.cgroup.path)  # type: ignore[union-attr]
    _run_loop_until(loop, lambda: c.oom_efd == -1)  # the removal's signal ends the watch
    assert not c.oom_seen
    assert not oom.was_oom_killed(loop, c, signal.SIGKILL)
