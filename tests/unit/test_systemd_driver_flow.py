"""cri_server.systemd_units against a recording fake of the D-Bus client: which units are
started and stopped with which properties, and that a container's placeholder never outlives
its create (the real calls: tests/vm/test_systemd_driver.py, under systemd)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from cri_server import systemd_units
from pycri_common.errors import FailedPrecondition
from runtime.cgroups import systemd_dbus


class FakeSystemd:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, Any]] = []

    def start_transient_unit(self, name: str, props: list[Any], exists_ok: bool = False) -> bool:
        self.calls.append(("start", name, {n: v for n, _, v in props}))
        return True

    def stop_unit(self, name: str) -> None:
        self.calls.append(("stop", name, None))

    def set_properties(self, name: str, props: list[Any]) -> None:
        self.calls.append(("set", name, {n: v for n, _, v in props}))


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeSystemd:
    sd = FakeSystemd()
    monkeypatch.setattr(systemd_units, "client", lambda: sd)
    return sd


POD = "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice"


def test_pod_units(fake: FakeSystemd) -> None:
    systemd_units.start_pod_slice(POD, owned=False, resources={"memory_limit_in_bytes": 1})
    systemd_units.start_pause_scope(POD, POD + "/pycri-p1.scope", "p1", 4242)
    (op, name, props), (op2, name2, props2) = fake.calls
    assert (op, name) == ("start", "kubepods-besteffort-pod1.slice")
    assert props["Wants"] == ["kubepods-besteffort.slice"]
    assert "MemoryMax" not in props            # kubelet's slice: kubelet sizes it
    assert (op2, name2) == ("start", "pycri-p1.scope")
    assert props2["PIDs"] == [4242] and props2["Slice"] == "kubepods-besteffort-pod1.slice"
    assert props2["Delegate"] is True


def test_stop_pod_prunes_empty_owned_parents(fake: FakeSystemd, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(systemd_units, "CGROUP_ROOT", str(tmp_path))
    pod = "/pt.slice/pt-pod9.slice"
    os.makedirs(tmp_path / "pt.slice")
    systemd_units.stop_pod(pod, pod + "/pycri-9.scope", owned=True, prune_to="/pt.slice")
    assert [(op, n) for op, n, _ in fake.calls] == [
        ("stop", "pycri-9.scope"), ("stop", "pt-pod9.slice"), ("stop", "pt.slice")]
    fake.calls.clear()
    os.makedirs(tmp_path / "pt.slice" / "pt-other.slice")    # another pod: the parent stays
    systemd_units.stop_pod(pod, pod + "/pycri-9.scope", owned=True, prune_to="/pt.slice")
    assert [n for _, n, _ in fake.calls] == ["pycri-9.scope", "pt-pod9.slice"]
    fake.calls.clear()
    systemd_units.stop_pod(POD, POD + "/pycri-1.scope", owned=False, prune_to="")
    assert [n for _, n, _ in fake.calls] == ["pycri-1.scope"]   # kubelet's slice stays


def test_container_scope_holds_a_placeholder_only_during_create(fake: FakeSystemd) -> None:
    path = POD + "/pycri-c1.scope"
    with systemd_units.container_scope(path, "c1", {"cpu_shares": 1024}):
        (_, name, props), = fake.calls
        holder = props["PIDs"][0]
        assert name == "pycri-c1.scope" and props["CPUWeight"] > 0
        assert os.path.exists(f"/proc/{holder}")              # alive while the shim creates
    assert not os.path.exists(f"/proc/{holder}")              # killed and reaped after
    with pytest.raises(RuntimeError), systemd_units.container_scope(path, "c1", {}):
        raise RuntimeError("create failed")
    assert fake.calls[-1][:2] == ("stop", "pycri-c1.scope")   # a failed create stops it


def test_updates_set_properties(fake: FakeSystemd) -> None:
    systemd_units.update_container_scope(POD + "/pycri-c1.scope",
                                         {"memory_limit_in_bytes": 1 << 20})
    systemd_units.update_pod_slice(POD, {"cpu_quota": 50000, "cpu_period": 100000})
    assert fake.calls == [("set", "pycri-c1.scope", {"MemoryMax": 1 << 20}),
                          ("set", "kubepods-besteffort-pod1.slice",
                           {"CPUQuotaPeriodUSec": 100000, "CPUQuotaPerSecUSec": 500000})]


def test_no_systemd_is_a_failed_precondition_saying_what_to_do(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(systemd_dbus, "SYSTEMD_RUN_DIR", str(tmp_path / "absent"))
    monkeypatch.setattr(systemd_dbus, "_shared", None)
    with pytest.raises(FailedPrecondition) as err:
        systemd_units.require("systemd")
    assert "is missing" in str(err.value) and 'cgroup_driver = "cgroupfs"' in str(err.value)
    systemd_units.require("cgroupfs")                           # nothing asked of systemd
    assert "is missing" in systemd_dbus.systemd_problem()
