"""runtime.shim.spawn.fork_exec's pid namespace switch: the shim's own pid_for_children is
back to its namespace after the fork, also when the fork fails (a real process in a pid
namespace of its own; the fork is made to fail as in a namespace whose init is gone)."""
from __future__ import annotations

import errno
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from pycri_common.errors import FailedPrecondition
from runtime.shim import spawn


@pytest.fixture
def pid_in_own_ns() -> Iterator[int]:
    proc = subprocess.Popen(["unshare", "--pid", "--fork", "sleep", "30"])
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
            if children:
                yield int(children[0])
                return
            time.sleep(0.01)
        pytest.fail("unshare started no child")
    finally:
        proc.kill()
        proc.wait()


def _ns(name: str) -> int:
    return os.stat(f"/proc/self/ns/{name}").st_ino


def test_a_failed_fork_into_the_namespace_leaves_the_shims_own(pid_in_own_ns, monkeypatch):
    assert os.stat(f"/proc/{pid_in_own_ns}/ns/pid").st_ino != _ns("pid")
    seen: list[int] = []

    def dying(path: str | None) -> tuple[int, bool]:
        seen.append(_ns("pid_for_children"))   # pointed at the container's for the fork
        raise OSError(errno.ENOMEM, "Cannot allocate memory")
    monkeypatch.setattr(spawn, "fork_in_cgroup", dying)
    monkeypatch.setattr(spawn, "_exec_plan", lambda *a: None)
    spec = cast(Any, SimpleNamespace(cgroup=None))
    with pytest.raises(FailedPrecondition, match="is exiting"):
        spawn.fork_exec(pid_in_own_ns, spec, {}, (0, 1, 2), -1)
    assert seen == [os.stat(f"/proc/{pid_in_own_ns}/ns/pid").st_ino]
    assert _ns("pid_for_children") == _ns("pid")
    assert not [t for t in _fd_targets() if t.startswith("pid:")]   # both ns fds closed


def _fd_targets() -> list[str]:
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            out.append(os.readlink(f"/proc/self/fd/{fd}"))
        except FileNotFoundError:   # the listing's own fd
            pass
    return out


def test_same_namespace_is_not_switched(monkeypatch):
    def other(path: str | None) -> tuple[int, bool]:
        raise OSError(errno.EAGAIN, "Resource temporarily unavailable")
    monkeypatch.setattr(spawn, "fork_in_cgroup", other)
    monkeypatch.setattr(spawn, "_exec_plan", lambda *a: None)
    with pytest.raises(OSError) as exc:   # not a namespace's death: passed on as it is
        spawn.fork_exec(os.getpid(), cast(Any, SimpleNamespace(cgroup=None)), {}, (0, 1, 2), -1)
    assert exc.value.errno == errno.EAGAIN
