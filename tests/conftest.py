"""Shared fixtures: the real daemon, and the session-wide leak check.

Integration tests (tests/integration) need root and real kernel features. They
talk to a real `pycri serve` subprocess through its unix socket.
"""
from __future__ import annotations

import os
import time
from collections.abc import Generator, Iterator
from typing import Any

import pytest
from hypothesis import settings

from tests.support import leaks
from tests.support.daemon import SLOWDOWN, TEST_BRIDGE, PycriDaemon

IS_ROOT = os.geteuid() == 0

# tests/vm needs a real cgroup v2 host (and AppArmor): it runs only in the VM leg
# (scripts/vm.sh sets PYCRI_VM=1), where tests/vm/conftest.py fails a host of the wrong shape.
collect_ignore = [] if os.environ.get("PYCRI_VM") == "1" else ["vm"]

# The fuzz tests (tests/unit/test_fuzz_*.py) explore new inputs on every developer run, but CI
# replays one fixed sequence, so a run on the same commit gives the same result.
settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.fspath) or "tests/vm" in str(item.fspath):
            item.add_marker(pytest.mark.integration)
            if not IS_ROOT:
                item.add_marker(pytest.mark.skip(reason="integration tests need root"))


def _remove_test_bridge() -> None:
    # The CNI bridge plugin (like containerd's cni0) leaves its bridge on DEL by design.
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError
    with IPRoute() as ipr:
        for index in ipr.link_lookup(ifname=TEST_BRIDGE):
            try:
                ipr.link("del", index=index)
            except NetlinkError:
                pass


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                               ) -> Generator[None, Any, None]:
    """A failed test that used a daemon shows the end of that daemon's log."""
    outcome = yield
    report = outcome.get_result()
    if not report.failed:
        return
    funcargs = getattr(item, "funcargs", {})
    for name in ("daemon", "fresh_daemon"):
        d = funcargs.get(name)
        if isinstance(d, PycriDaemon):
            report.sections.append((f"pycri log ({name})", d.log_tail(80)))


@pytest.fixture(scope="session", autouse=True)
def leak_check(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fails the session if tests leave mounts, netns, processes, cgroups or rules behind."""
    if not IS_ROOT:
        yield
        return
    before = leaks.Snapshot.take()
    yield
    _remove_test_bridge()
    deadline = time.monotonic() + 10 * SLOWDOWN
    while True:  # reaping and unmounting can lag a moment behind the last test
        found = leaks.Snapshot.take().leaked_since(before)
        if not found or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    if found:
        pytest.fail(leaks.format_leaks(found), pytrace=False)


@pytest.fixture(scope="session")
def daemon() -> Iterator[PycriDaemon]:
    """One daemon shared by the tests that do not restart or reconfigure it."""
    d = PycriDaemon().start()
    try:
        yield d
    finally:
        rc = d.stop()
        d.cleanup_dirs()
        assert rc == 0, f"pycri exited with {rc} on SIGTERM:\n{d.log_tail()}"


@pytest.fixture
def fresh_daemon() -> Iterator[PycriDaemon]:
    """A daemon of the test's own, for restarts, crashes and special configs (not started)."""
    d = PycriDaemon()
    try:
        yield d
    finally:
        d.stop()
        d.cleanup_dirs()


@pytest.fixture
def cri(daemon: PycriDaemon):  # type: ignore[no-untyped-def]
    return daemon.c
