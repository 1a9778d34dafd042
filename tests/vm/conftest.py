"""The VM leg: tests that need a real cgroup v2 host with every controller, and AppArmor.

They are collected only inside the VM of scripts/vm.sh (PYCRI_VM=1, see tests/conftest.py);
there a host of any other shape FAILS them instead of skipping, so the leg can never pass
without having tested what it is for. test_systemd_driver.py is collected only in the boot with
systemd as PID 1 (PYCRI_VM_SYSTEMD=1), and there a guest without systemd fails it.
"""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import vm_host

collect_ignore = [] if vm_host.in_systemd_leg() else ["test_systemd_driver.py"]


@pytest.fixture(scope="session", autouse=True)
def cgroup2_host() -> Iterator[None]:
    problem = vm_host.cgroup2_problem()
    if problem:
        pytest.fail(f"the VM leg needs a cgroup v2 host with every controller: {problem}",
                    pytrace=False)
    if vm_host.in_systemd_leg():
        problem = vm_host.systemd_problem()
        if problem:
            pytest.fail(f"the systemd leg needs systemd as PID 1 with its bus: {problem}",
                        pytrace=False)
    yield


@pytest.fixture
def apparmor_host() -> None:
    problem = vm_host.apparmor_problem()
    if problem:
        pytest.fail(f"this test needs AppArmor enabled with apparmor_parser: {problem}",
                    pytrace=False)
