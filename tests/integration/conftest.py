"""Fixtures shared by integration test modules (the daemon and leak check are in tests/conftest.py)."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.shim_support import ShimEnv
from tests.support.containers import ContainerEnv
from tests.support.daemon import PycriDaemon


@pytest.fixture(scope="module")
def container_env(daemon) -> Iterator[ContainerEnv]:  # type: ignore[no-untyped-def]
    """A local registry with the busybox test images pulled and one ready pod, per module
    (tests.support.containers.ContainerEnv); removed with everything it made."""
    with ContainerEnv(daemon.c) as env:
        yield env


@pytest.fixture(scope="module")
def shim_env() -> Iterator[ShimEnv]:
    """A zygote of the module's own for tests that drive pod shims directly (no daemon)."""
    e = ShimEnv()
    try:
        yield e
    finally:
        e.close()


@pytest.fixture
def started(fresh_daemon: PycriDaemon) -> Iterator[tuple[PycriDaemon, ContainerEnv]]:
    """A daemon of the test's own with a ContainerEnv (images, one pod): for tests that kill
    and restart the daemon (restarted at the end if the test left it down)."""
    fresh_daemon.start()
    env = ContainerEnv(fresh_daemon.c)
    with env:
        yield fresh_daemon, env
        if fresh_daemon.proc is None:
            fresh_daemon.start()
        env.cri = fresh_daemon.c
