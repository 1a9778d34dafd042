"""The monitor's loop keeps pods apart: a callback's owner is whoever registered it, an
exception in one pod's callback goes to that pod's shim.log (the reader that raised is
dropped so it cannot spin) and the other pods' callbacks and timers run on; with no error
handler (a process of its own) exceptions propagate as before."""
from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from runtime.pod_spec import PodSpec
from runtime.shim.loop import Loop
from runtime.shim.monitor import HostedPod, Monitor


def _pod(tmp_path: Path, name: str) -> HostedPod:
    spec = PodSpec.from_json({
        "pod_id": name, "hostname": name,
        "namespaces": {"network": "node", "ipc": "node", "pid": "node"}, "sysctls": {},
        "shim_dir": str(tmp_path / name), "ns_dir": str(tmp_path / "ns" / name),
        "cgroup": None, "log_level": "info"})
    fd = os.open(tmp_path / f"{name}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    return HostedPod(spec, fd)


def test_a_pods_failing_callback_is_logged_there_and_the_others_run_on(tmp_path: Path) -> None:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(tmp_path / "monitor.sock"))
    listener.listen()
    monitor = Monitor(listener)
    loop = monitor.loop
    bad, good = _pod(tmp_path, "bad"), _pod(tmp_path, "good")
    bad_r, bad_w = os.pipe()
    good_r, good_w = os.pipe()
    calls: list[str] = []

    def explode() -> None:
        calls.append("bad")
        loop.call_later(0, lambda: calls.append(f"timer of {type(loop.owner).__name__}"))
        raise ValueError("boom in one pod")

    def fine() -> None:
        calls.append(f"good:{os.read(good_r, 10).decode()}")

    loop.owner = bad
    loop.add_reader(bad_r, explode)   # registered while the pod sets up: the pod's
    loop.owner = good
    loop.add_reader(good_r, fine)
    loop.owner = None
    os.write(bad_w, b"x")
    os.write(good_w, b"1")
    for _ in range(3):
        loop.run_once()
        os.write(good_w, b"2")
    assert calls.count("bad") == 1            # dropped after it raised: no spinning
    assert "timer of HostedPod" in calls      # its timer ran as the pod's
    assert [c for c in calls if c.startswith("good")][:2] == ["good:1", "good:2"]
    log = (tmp_path / "bad.log").read_text()
    assert "boom in one pod" in log and "ValueError" in log
    assert (tmp_path / "good.log").read_text() == ""
    for fd in (bad_r, bad_w, good_r, good_w):
        os.close(fd)
    bad.close_log()
    good.close_log()
    listener.close()


def test_without_an_error_handler_exceptions_propagate() -> None:
    loop = Loop()
    def fail() -> None:
        raise ZeroDivisionError

    loop.call_later(0, fail)
    with pytest.raises(ZeroDivisionError):
        loop.run_once()


def test_unknown_reaped_pids_wait_unclaimed(
        tmp_path: Path) -> None:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(tmp_path / "monitor.sock"))
    monitor = Monitor(listener)
    monitor.dispatch(1 << 23, 0)  # no pod knows it
    assert monitor.unclaimed == {1 << 23: 0}
    listener.close()
