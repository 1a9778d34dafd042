"""The VM leg: tests that need a real cgroup v2 host with every controller, and AppArmor.

They are collected only inside the VM of scripts/vm.sh (PYCRI_VM=1, see tests/conftest.py);
there a host of any other shape FAILS them instead of skipping, so the leg can never pass
without having tested what it is for. test_systemd_driver.py is collected only in the boot with
systemd as PID 1 (PYCRI_VM_SYSTEMD=1), and there a guest without systemd fails it;
test_systemd_v1.py only (and alone) in the systemd boot with cgroup v1 (PYCRI_VM_CGROUP=hybrid).
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import vm_host

collect_ignore = ["test_systemd_v1.py"] + ([] if vm_host.in_systemd_leg()
                                            else ["test_systemd_driver.py"])
if vm_host.in_v1_leg():   # cgroup v1 under systemd: only the systemd driver's v1 tests
    collect_ignore = [p.name for p in Path(__file__).parent.glob("test_*.py")
                      if p.name != "test_systemd_v1.py"]


@pytest.fixture(scope="session", autouse=True)
def cgroup2_host() -> Iterator[None]:
    if vm_host.in_v1_leg():
        problem = vm_host.v1_problem()
        if problem:
            pytest.fail(f"the v1 systemd leg needs cgroup v1 controllers: {problem}",
                        pytrace=False)
    else:
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
