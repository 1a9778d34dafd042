"""runtime.cgroups.systemd_units: unit names and the properties systemd gets (pure)."""
from __future__ import annotations

import pytest

from pycri_common.errors import InvalidArgument
from runtime.cgroups import systemd_units as su
from runtime.cgroups.resources import shares_to_weight

INF = su.UINT64_MAX
MiB = 1 << 20


def props(res: dict[str, object]) -> dict[str, tuple[str, object]]:
    return {name: (sig, value) for name, sig, value in su.resource_properties(res)}


def test_names() -> None:
    assert su.scope_name("abc") == "pycri-abc.scope"
    assert su.parent_slice("kubepods-burstable-pod1_2.slice") == "kubepods-burstable.slice"
    assert su.parent_slice("kubepods.slice") == "-.slice"
    assert su.unit_of_path("/kubepods.slice/kubepods-pod1.slice/pycri-x.scope") == \
        "pycri-x.scope"
    assert su.unit_of_path("/kubepods.slice/kubepods-pod1.slice") == "kubepods-pod1.slice"
    for bad in ("", "a/b", "a b", "x\n"):
        with pytest.raises(InvalidArgument):
            su.scope_name(bad)
    with pytest.raises(InvalidArgument):
        su.parent_slice("-.slice")
    with pytest.raises(InvalidArgument):
        su.unit_of_path("/kubepods/pod1")


def test_cpu_quota_rounds_up_to_whole_percent() -> None:
    assert su.cpu_quota_per_sec_usec(50000, 100000) == 500000
    assert su.cpu_quota_per_sec_usec(12345, 100000) == 130000   # 12.345 % -> 13 %
    assert su.cpu_quota_per_sec_usec(20000, 0) == 200000        # default period
    assert su.cpu_quota_per_sec_usec(0, 100000) == INF
    assert su.cpu_quota_per_sec_usec(-1, 100000) == INF


def test_cpuset_bits_little_endian() -> None:
    assert su.cpuset_bits("0", "x") == b"\x01"
    assert su.cpuset_bits("0-2,7", "x") == b"\x87"
    assert su.cpuset_bits("1,8-9", "x") == b"\x02\x03"
    for bad in ("", "a", "3-1", "-1", "0-99999"):
        with pytest.raises(InvalidArgument):
            su.cpuset_bits(bad, "x")


def test_resource_properties() -> None:
    p = props({"cpu_shares": 512, "cpu_quota": 50000, "cpu_period": 100000,
               "memory_limit_in_bytes": 64 * MiB, "memory_swap_limit_in_bytes": 96 * MiB,
               "memory_reservation_in_bytes": 8 * MiB, "pids_limit": 77,
               "cpuset_cpus": "0", "cpuset_mems": "0"})
    assert p == {"MemoryMax": ("t", 64 * MiB), "MemoryLow": ("t", 8 * MiB),
                 "MemorySwapMax": ("t", 32 * MiB),       # v2 counts swap alone
                 "CPUWeight": ("t", shares_to_weight(512)),
                 "CPUQuotaPeriodUSec": ("t", 100000), "CPUQuotaPerSecUSec": ("t", 500000),
                 "TasksMax": ("t", 77), "AllowedCPUs": ("ay", b"\x01"),
                 "AllowedMemoryNodes": ("ay", b"\x01")}
    assert props({}) == {}                                  # zero = keep (updates)
    assert props({"memory_limit_in_bytes": -1, "pids_limit": -1,
                  "memory_swap_limit_in_bytes": -1}) == {
        "MemoryMax": ("t", INF), "TasksMax": ("t", INF), "MemorySwapMax": ("t", INF)}
    assert props({"cpu_period": 50000}) == {"CPUQuotaPeriodUSec": ("t", 50000),
                                            "CPUQuotaPerSecUSec": ("t", INF)}


def test_unified_keys_systemd_owns_win() -> None:
    p = props({"memory_limit_in_bytes": 64 * MiB, "unified": {
        "memory.max": "max", "memory.high": str(60 * MiB), "memory.min": "4096",
        "pids.max": "12", "cpu.weight": "300", "cpu.max": "25000 50000",
        "io.weight": "default 50\n8:0 200", "cpuset.cpus": "1", "hugetlb.2MB.max": "0",
        "memory.oom.group": "1"}})
    assert p["MemoryMax"] == ("t", INF)
    assert p["MemoryHigh"] == ("t", 60 * MiB)
    assert p["MemoryMin"] == ("t", 4096)
    assert p["TasksMax"] == ("t", 12)
    assert p["CPUWeight"] == ("t", 300)
    assert p["CPUQuotaPeriodUSec"] == ("t", 50000)
    assert p["CPUQuotaPerSecUSec"] == ("t", 500000)
    assert p["IOWeight"] == ("t", 50)
    assert p["AllowedCPUs"] == ("ay", b"\x02")
    assert not any(name.startswith("Huge") for name in p)   # files only
    assert "OOMPolicy" not in p                               # a new unit's property only
    assert props({"unified": {"cpu.max": "max"}})["CPUQuotaPerSecUSec"] == ("t", INF)
    for bad in ({"memory.max": "lots"}, {"pids.max": "-3"}, {"cpu.max": "1 2 3"}):
        with pytest.raises(InvalidArgument):
            su.resource_properties({"unified": bad})


def test_scope_and_slice_properties() -> None:
    sp = su.scope_properties("kubepods-pod1.slice", [42], "pycri container x",
                             {"memory_limit_in_bytes": MiB,
                              "unified": {"memory.oom.group": "1"}})
    names = [n for n, _, _ in sp]
    assert len(names) == len(set(names))
    d = {n: (s, v) for n, s, v in sp}
    assert d["Slice"] == ("s", "kubepods-pod1.slice")
    assert d["Delegate"] == ("b", True)
    assert d["PIDs"] == ("au", [42])
    assert d["DefaultDependencies"] == ("b", False)
    assert d["OOMPolicy"] == ("s", "kill")
    assert d["MemoryMax"] == ("t", MiB)
    assert all(d[a] == ("b", True) for a in ("MemoryAccounting", "CPUAccounting",
                                             "IOAccounting", "TasksAccounting"))
    with pytest.raises(InvalidArgument):
        su.scope_properties("kubepods-pod1.slice", [], "x")
    with pytest.raises(InvalidArgument):
        su.scope_properties("kubepods/pod1", [1], "x")
    sl = {n: (s, v) for n, s, v in su.slice_properties("kubepods-besteffort-pod2.slice", "p")}
    assert sl["Wants"] == ("as", ["kubepods-besteffort.slice"])
    assert "Delegate" not in sl and "PIDs" not in sl
    top = {n for n, _, _ in su.slice_properties("pycri_test.slice", "p")}
    assert "Wants" not in top
