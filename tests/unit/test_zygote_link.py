"""ZygoteLink: a dead zygote is restarted once, however many RunPodSandbox calls notice it."""
from __future__ import annotations

import threading
from typing import Any

import pytest

from cri_server.sandboxes import zygote_link
from runtime.pod_spec import PodSpec
from runtime.zygote_client import ZygoteError


class _Zygote:
    def __init__(self, dead: bool, barrier: threading.Barrier) -> None:
        self.dead = dead
        self.barrier = barrier
        self.process = None

    def spawn_shim_info(self, spec: PodSpec, adopt: bool = False) -> dict[str, Any]:
        if self.dead:
            self.barrier.wait(5)  # both callers see the dead zygote before either restarts it
            raise ZygoteError("connection refused")
        return {"pid": 1}

    def ping(self, timeout: float = 0) -> None:
        if self.dead:
            raise ZygoteError("connection refused")


def test_concurrent_spawns_restart_a_dead_zygote_once(monkeypatch: pytest.MonkeyPatch) -> None:
    barrier = threading.Barrier(2)
    started: list[_Zygote] = []

    def start_zygote(state_dir: str, python: str = "") -> _Zygote:
        z = _Zygote(dead=not started, barrier=barrier)  # the first one dies
        started.append(z)
        return z

    monkeypatch.setattr(zygote_link, "start_zygote", start_zygote)
    link = zygote_link.ZygoteLink("/nonexistent")
    link.start()
    results: list[Any] = []
    spec = PodSpec("p", "/run/s", "/run/n")
    threads = [threading.Thread(target=lambda: results.append(link.spawn(spec))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert results == [{"pid": 1}, {"pid": 1}]
    # a second restart would stop the zygote the other caller had just started and was using
    assert len(started) == 2
