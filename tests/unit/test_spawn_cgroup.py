"""runtime.cgroups.clone_into.fork_in_cgroup: when an exec'd process (or a container's) is
cloned into its container's cgroup (clone3 CLONE_INTO_CGROUP) and when it falls back to a
fork plus its own join (Cgroup.join_self). The clone itself is faked; the kernel's side is tested
in the VM leg (tests/vm) and by tests/integration/test_container_init_cgroups.py."""
from __future__ import annotations

import errno
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime import syscalls
from runtime.cgroups import clone_into
from runtime.cgroups import mode as cgmode


@pytest.fixture
def v2_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    (tmp_path / "pod" / "ctr").mkdir(parents=True)
    monkeypatch.setattr(cgmode, "CGROUP_ROOT", str(tmp_path))
    monkeypatch.setattr(cgmode, "detect_mode", lambda *a, **k: "v2")
    monkeypatch.setattr(clone_into, "_clone_into_cgroup", True)
    # the shim and monitor are single-threaded; pytest's process may not be
    monkeypatch.setattr(threading, "active_count", lambda: 1)
    yield tmp_path


def _fork(path: str | None) -> tuple[int, bool]:
    pid, joined = clone_into.fork_in_cgroup(path)
    if pid == 0:
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return pid, joined


def _fake_clone(monkeypatch: pytest.MonkeyPatch, seen: list[str],
                error: int | None = None) -> None:
    def fork_into_cgroup(fd: int) -> int:
        seen.append(os.readlink(f"/proc/self/fd/{fd}"))
        if error is not None:
            raise OSError(error, os.strerror(error))
        return os.fork()
    monkeypatch.setattr(syscalls, "fork_into_cgroup", fork_into_cgroup)


def test_v2_clones_into_the_container_cgroup(v2_root: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []
    _fake_clone(monkeypatch, seen)
    assert _fork("/pod/ctr")[1] is True
    assert seen == [str(v2_root / "pod" / "ctr")]
    assert _fork(None)[1] is False and len(seen) == 1   # no cgroup in the spec


def test_busy_cgroup_falls_back_for_this_exec_only(v2_root: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """EBUSY: the container made its cgroup an inner node; container_init joins the init's."""
    seen: list[str] = []
    _fake_clone(monkeypatch, seen, errno.EBUSY)
    assert _fork("/pod/ctr")[1] is False
    assert _fork("/pod/ctr")[1] is False and len(seen) == 2   # tried again next time
    assert _fork("/pod/gone")[1] is False and len(seen) == 2  # no such cgroup: no clone3


def test_kernel_without_clone3_is_not_asked_again(v2_root: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []
    _fake_clone(monkeypatch, seen, errno.ENOSYS)
    assert _fork("/pod/ctr")[1] is False
    assert _fork("/pod/ctr")[1] is False and len(seen) == 1


def test_hybrid_clones_into_the_unified_hierarchy(v2_root: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """hybrid: the child starts in the unified hierarchy's cgroup (its v1 ones it joins by
    itself: Cgroup.join_self); pure v1 has no cgroup to clone into."""
    (v2_root / "unified" / "pod" / "ctr").mkdir(parents=True)
    seen: list[str] = []
    _fake_clone(monkeypatch, seen)
    monkeypatch.setattr(cgmode, "detect_mode", lambda *a, **k: "hybrid")
    assert _fork("/pod/ctr")[1] is True
    assert seen == [str(v2_root / "unified" / "pod" / "ctr")]
    monkeypatch.setattr(cgmode, "detect_mode", lambda *a, **k: "v1")
    assert _fork("/pod/ctr")[1] is False
    assert len(seen) == 1


def test_a_process_with_threads_forks_and_writes_cgroup_procs(
        v2_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """clone3 runs no at-fork handlers: only a single-threaded process clones."""
    seen: list[str] = []
    _fake_clone(monkeypatch, seen)
    monkeypatch.setattr(threading, "active_count", lambda: 2)
    assert _fork("/pod/ctr")[1] is False and seen == []
