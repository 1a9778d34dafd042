"""cgroup naming (cgroupfs + systemd), resource conversion, mode detection, and the v1/v2
managers against fake directory trees (no root needed)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from pycri_common.errors import FailedPrecondition, InvalidArgument
from runtime.cgroups import mode, naming, resources
from runtime.cgroups.manager import V1Cgroup, V2Cgroup, open_cgroup

RES = {"cpu_shares": 1024, "cpu_quota": 50000, "cpu_period": 100000, "cpuset_cpus": "0-1",
       "cpuset_mems": "0", "memory_limit_in_bytes": 100 << 20,
       "memory_swap_limit_in_bytes": 150 << 20, "pids_limit": 64,
       "hugepage_limits": [{"page_size": "2MB", "limit": 4 << 20}]}


# --------------------------------------------------------------------------- naming

def test_cgroupfs_paths() -> None:
    assert naming.pod_cgroup_path("cgroupfs", "/kubepods/burstable/pod1") == \
        "/kubepods/burstable/pod1"
    assert naming.pod_cgroup_path("cgroupfs", "kubepods//besteffort/") == "/kubepods/besteffort"
    assert naming.container_cgroup_path("cgroupfs", "/kubepods/pod1", "abc") == \
        "/kubepods/pod1/abc"
    with pytest.raises(InvalidArgument):
        naming.container_cgroup_path("cgroupfs", "/kubepods/../x", "abc")
    with pytest.raises(InvalidArgument):
        naming.container_cgroup_path("cgroupfs", "/kubepods", "a/b")


def test_expand_slice() -> None:
    assert naming.expand_slice("-.slice") == "/"
    assert naming.expand_slice("kubepods.slice") == "/kubepods.slice"
    assert naming.expand_slice("kubepods-burstable-pod12_34.slice") == (
        "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod12_34.slice")
    for bad in ("kubepods", "a--b.slice", "-a.slice", "a-.slice", "a/b.slice"):
        with pytest.raises(InvalidArgument):
            naming.expand_slice(bad)


def test_systemd_pod_and_container() -> None:
    pod = naming.systemd_pod_slice("kubepods-besteffort.slice", "12-34-56")
    assert pod == "kubepods-besteffort-pod12_34_56.slice"
    assert naming.pod_cgroup_path("systemd", pod) == (
        "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod12_34_56.slice")
    assert naming.container_cgroup_path("systemd", pod, "abc") == (
        "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod12_34_56.slice/"
        "pycri-abc.scope")
    assert naming.container_cgroup_path("systemd", "system.slice:cri:xyz", "ignored") == \
        "/system.slice/cri-xyz.scope"
    assert naming.spec_cgroup_path({"driver": "systemd", "path": "a-b.slice:p:c"}) == \
        "/a.slice/a-b.slice/p-c.scope"
    assert naming.spec_cgroup_path({"driver": "cgroupfs", "path": "/x/y"}) == "/x/y"
    with pytest.raises(InvalidArgument):
        naming.container_cgroup_path("systemd", "/kubepods/pod1", "abc")
    # a path names its last component (critest sends '/test.slice' under the systemd driver)
    assert naming.pod_cgroup_path("systemd", "/test.slice") == "/test.slice"
    assert naming.pod_cgroup_path("systemd", f"/kubepods.slice/{pod}/") == (
        "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod12_34_56.slice")
    for bad in ("/kubepods/pod1", "/", "/a/"):
        with pytest.raises(InvalidArgument):
            naming.pod_cgroup_path("systemd", bad)
    with pytest.raises(InvalidArgument):
        naming.pod_cgroup_path("nope", "/x")


# --------------------------------------------------------------------------- resources

def test_v1_writes_order_and_values() -> None:
    assert resources.v1_writes(RES) == [
        ("cpu", "cpu.shares", "1024"), ("cpu", "cpu.cfs_period_us", "100000"),
        ("cpu", "cpu.cfs_quota_us", "50000"), ("cpuset", "cpuset.cpus", "0-1"),
        ("cpuset", "cpuset.mems", "0"), ("memory", "memory.limit_in_bytes", str(100 << 20)),
        ("memory", "memory.memsw.limit_in_bytes", str(150 << 20)),
        ("pids", "pids.max", "64"), ("hugetlb", "hugetlb.2MB.limit_in_bytes", str(4 << 20))]
    assert resources.v1_writes({}) == []
    assert resources.v1_writes({"pids_limit": -1}) == [("pids", "pids.max", "max")]
    with pytest.raises(InvalidArgument, match="v2"):
        resources.v1_writes({"unified": {"memory.high": "1"}})
    with pytest.raises(InvalidArgument, match=">="):
        resources.v1_writes({"memory_limit_in_bytes": 10, "memory_swap_limit_in_bytes": 5})


def test_v2_writes() -> None:
    got = dict(resources.v2_writes({**RES, "unified": {"memory.high": "90000000"}}))
    assert got == {"cpu.weight": "39", "cpu.max": "50000 100000", "cpuset.cpus": "0-1",
                   "cpuset.mems": "0", "memory.max": str(100 << 20),
                   "memory.swap.max": str(50 << 20), "pids.max": "64",
                   "hugetlb.2MB.max": str(4 << 20), "memory.high": "90000000"}
    assert resources.v2_writes({"cpu_quota": -1, "cpu_period": 0}) == [
        ("cpu.max", "max 100000")]
    assert resources.v2_writes({"memory_limit_in_bytes": 5, "memory_swap_limit_in_bytes": -1}
                               ) == [("memory.max", "5"), ("memory.swap.max", "max")]


def test_shares_to_weight_bounds() -> None:
    assert resources.shares_to_weight(2) == 1
    assert resources.shares_to_weight(262144) == 10000
    assert resources.shares_to_weight(0) == 0


def test_parse_flat_keyed() -> None:
    assert resources.parse_flat_keyed("oom_kill_disable 0\nunder_oom 0\noom_kill 3\nbad x\n") \
        == {"oom_kill_disable": 0, "under_oom": 0, "oom_kill": 3}


# --------------------------------------------------------------------------- mode

V1_MOUNTS = """tmpfs /sys/fs/cgroup tmpfs rw 0 0
cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,nosuid,cpu,cpuacct 0 0
cgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0
cgroup /sys/fs/cgroup/systemd cgroup rw,xattr,name=systemd 0 0
"""


def test_detect_mode() -> None:
    assert mode.detect_mode(mounts_text="cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n") == "v2"
    assert mode.detect_mode(mounts_text=V1_MOUNTS) == "v1"
    hybrid = V1_MOUNTS + "cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n"
    assert mode.detect_mode(mounts_text=hybrid) == "hybrid"
    assert mode.unified_root(mounts_text=hybrid) == "/sys/fs/cgroup/unified"
    assert mode.v1_hierarchies(mounts_text=V1_MOUNTS) == {
        "cpu": "/sys/fs/cgroup/cpu,cpuacct", "cpuacct": "/sys/fs/cgroup/cpu,cpuacct",
        "memory": "/sys/fs/cgroup/memory", "name=systemd": "/sys/fs/cgroup/systemd"}


# --------------------------------------------------------------------------- fake trees

def _v2_tree(tmp_path: Path) -> Path:
    root = tmp_path / "cg2"
    root.mkdir()
    (root / "cgroup.controllers").write_text("cpuset cpu io memory hugetlb pids\n")
    (root / "cgroup.subtree_control").write_text("")
    return root


def test_v2_manager_on_fake_tree(tmp_path: Path) -> None:
    root = _v2_tree(tmp_path)
    mounts = f"cgroup2 {root} cgroup2 rw 0 0\n"
    cg = open_cgroup("/kubepods/pod1/c1", root=str(root), mounts_text=mounts)
    assert isinstance(cg, V2Cgroup)
    cg.create()
    assert (root / "cgroup.subtree_control").read_text() == "+cpuset +cpu +io +memory +hugetlb +pids"
    d = root / "kubepods/pod1/c1"
    # the kernel creates the interface files; a fake tree needs them to exist for writes
    for name in ("cpu.weight", "cpu.max", "cpuset.cpus", "cpuset.mems", "memory.max",
                 "memory.swap.max", "pids.max", "hugetlb.2MB.max", "memory.high",
                 "cgroup.procs"):
        (d / name).write_text("")
    cg.apply_resources({**RES, "unified": {"memory.high": "1234"}})
    assert (d / "cpu.max").read_text() == "50000 100000"
    assert (d / "memory.swap.max").read_text() == str(50 << 20)
    assert (d / "memory.high").read_text() == "1234"
    with pytest.raises(InvalidArgument, match=r"memory\.nope"):
        cg.apply_resources({"unified": {"memory.nope": "1"}})
    (d / "cpu.stat").write_text("usage_usec 1500\nuser_usec 1000\n")
    (d / "memory.current").write_text("1000000\n")
    (d / "memory.stat").write_text("anon 600000\ninactive_file 200000\npgfault 7\n"
                                   "pgmajfault 1\n")
    (d / "memory.events").write_text("low 0\nhigh 0\nmax 4\noom 2\noom_kill 2\n")
    (d / "pids.current").write_text("3\n")
    st = cg.stats()
    assert st["cpu_usage_ns"] == 1_500_000 and st["memory_working_set_bytes"] == 800000
    assert st["memory_rss_bytes"] == 600000 and st["page_faults"] == 7
    assert st["oom_kill_count"] == 2 and st["pids_current"] == 3 and st["memory_failcnt"] == 4
    cg.attach(1234)
    assert (d / "cgroup.procs").read_text() == "1234"


def test_v1_manager_on_fake_tree(tmp_path: Path) -> None:
    base = tmp_path / "cg"
    lines = []
    for ctrl in ("cpu", "cpuacct", "cpuset", "memory", "pids"):
        (base / ctrl).mkdir(parents=True)
        lines.append(f"cgroup {base}/{ctrl} cgroup rw,{ctrl} 0 0")
    (base / "cpuset/cpuset.cpus").write_text("0-3\n")
    (base / "cpuset/cpuset.mems").write_text("0\n")
    cg = open_cgroup("/pod/c", root=str(base), mounts_text="\n".join(lines))
    assert isinstance(cg, V1Cgroup) and cg.unified_root is None
    for p in ("pod", "pod/c"):  # what the kernel would create in a new cpuset group
        (base / "cpuset" / p).mkdir(parents=True)
        (base / "cpuset" / p / "cpuset.cpus").write_text("")
        (base / "cpuset" / p / "cpuset.mems").write_text("")
    cg.create()
    assert (base / "cpuset/pod/c/cpuset.cpus").read_text() == "0-3"
    for ctrl, name in (("cpu", "cpu.shares"), ("cpu", "cpu.cfs_period_us"),
                       ("cpu", "cpu.cfs_quota_us"), ("memory", "memory.limit_in_bytes"),
                       ("pids", "pids.max")):
        (base / ctrl / "pod/c" / name).write_text("")
    cg.apply_resources({"cpu_shares": 2, "cpu_quota": 1000, "cpu_period": 10000,
                        "memory_limit_in_bytes": 4096, "memory_swap_limit_in_bytes": 8192,
                        "pids_limit": 5, "hugepage_limits": [{"page_size": "2MB",
                                                              "limit": 0}]})
    assert (base / "memory/pod/c/memory.limit_in_bytes").read_text() == "4096"
    assert (base / "pids/pod/c/pids.max").read_text() == "5"
    (base / "memory/pod/c/memory.oom_control").write_text("oom_kill_disable 0\noom_kill 1\n")
    assert cg.oom_kill_count() == 1
    with pytest.raises(InvalidArgument, match="not mounted"):
        V1Cgroup("/x", {"memory": str(base / "memory")}).apply_resources({"cpu_shares": 5})
    # no cpu.rt_* files: a kernel without CONFIG_RT_GROUP_SCHED
    with pytest.raises(FailedPrecondition, match="CONFIG_RT_GROUP_SCHED"):
        cg.apply_resources({"cpu_realtime_runtime": 1000})


def test_open_cgroup_rejects_bad_paths() -> None:
    for bad in ("relative", "/a/../b"):
        with pytest.raises(InvalidArgument):
            open_cgroup(bad, mounts_text=V1_MOUNTS)


def test_device_rule_parsing_and_program_shape() -> None:
    from pycri_common.errors import InvalidArgument
    from runtime.cgroups import devices_bpf

    assert devices_bpf.parse_rule("c 1:3 rwm") == ("c", 1, 3, 7)
    assert devices_bpf.parse_rule("b *:* m") == ("b", None, None, 1)
    for bad in ("c 1:3", "x 1:3 r", "c 1:3 rwx", "c a:3 r", "c 1 r"):
        with pytest.raises(InvalidArgument):
            devices_bpf.parse_rule(bad)
    empty = devices_bpf.build_program([])
    assert len(empty) % 8 == 0 and empty[-8] == 0x95  # ends with exit: deny all
    # one rule adds its checks (type, access, major, minor) + allow (mov, exit)
    assert len(devices_bpf.build_program(["c 1:3 r"])) - len(empty) == 8 * (1 + 3 + 2 + 2)


def test_pause_holder_gets_its_own_leaf_on_cgroup_v2() -> None:
    """v2 refuses to enable controllers in a cgroup that holds processes (EBUSY): with the
    pause-holder in the pod cgroup itself, every container cgroup creation (which enables
    the controllers in the pod cgroup) would fail. v1/hybrid keep the pod cgroup."""
    from runtime.cgroups import naming

    pod = "/kubepods/besteffort/pod1"
    assert naming.pause_cgroup_path(pod, "cgroupfs", "abc", "v1") == pod
    assert naming.pause_cgroup_path(pod, "cgroupfs", "abc", "hybrid") == pod
    assert naming.pause_cgroup_path(pod, "cgroupfs", "abc", "v2") == pod + "/abc"
    sl = "/kubepods.slice/kubepods-pod1.slice"
    assert naming.pause_cgroup_path(sl, "systemd", "abc", "v2") == sl + "/pycri-abc.scope"


def test_nri_memory_reservation_swappiness_and_realtime_on_v1() -> None:
    from runtime.cgroups import resources as res_mod
    writes = res_mod.v1_writes({"memory_reservation_in_bytes": 64, "memory_swappiness": 0,
                                "cpu_realtime_period": 500000, "cpu_realtime_runtime": 0})
    assert writes == [("cpu", "cpu.rt_period_us", "500000"), ("cpu", "cpu.rt_runtime_us", "0"),
                      ("memory", "memory.soft_limit_in_bytes", "64"),
                      ("memory", "memory.swappiness", "0")]
    with pytest.raises(InvalidArgument, match="memory_swappiness"):
        res_mod.v1_writes({"memory_swappiness": 101})


def test_nri_reservation_is_memory_low_on_v2_and_swappiness_realtime_do_not_apply() -> None:
    from runtime.cgroups import resources as res_mod
    assert res_mod.v2_writes({"memory_reservation_in_bytes": 64}) == [("memory.low", "64")]
    for key in ("memory_swappiness", "cpu_realtime_runtime", "cpu_realtime_period"):
        with pytest.raises(InvalidArgument, match=f"{key}: not applicable"):
            res_mod.v2_writes({key: 0})


def _cgroup_tree(base: Path, dirs: tuple[str, ...]) -> None:
    for d in dirs:
        (base / d / "pod/c").mkdir(parents=True)
        for name in ("tasks", "cgroup.procs"):
            (base / d / "pod/c" / name).write_text("")


def test_v1_join_self_moves_only_the_calling_thread(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A single-threaded process joins each v1 hierarchy through `tasks` with "0" (the kernel
    then takes no threadgroup lock, no RCU grace period); hybrid's unified hierarchy by
    cgroup.procs unless the process was cloned into it. With threads: cgroup.procs and the
    pid everywhere (`tasks` would move one thread)."""
    import threading
    _cgroup_tree(tmp_path, ("cpu", "memory", "unified"))
    hier = {"cpu": str(tmp_path / "cpu"), "cpuacct": str(tmp_path / "cpu"),
            "memory": str(tmp_path / "memory")}
    files = {d: (tmp_path / d / "pod/c") for d in ("cpu", "memory", "unified")}

    def written() -> dict[str, tuple[str, str]]:
        out = {d: ((f / "tasks").read_text(), (f / "cgroup.procs").read_text())
               for d, f in files.items()}
        for f in files.values():
            (f / "tasks").write_text("")
            (f / "cgroup.procs").write_text("")
        return out

    monkeypatch.setattr(threading, "active_count", lambda: 1)
    V1Cgroup("/pod/c", hier, str(tmp_path / "unified")).join_self()
    assert written() == {"cpu": ("0", ""), "memory": ("0", ""), "unified": ("", "0")}
    V1Cgroup("/pod/c", hier, str(tmp_path / "unified")).join_self(unified_joined=True)
    assert written() == {"cpu": ("0", ""), "memory": ("0", ""), "unified": ("", "")}
    V1Cgroup("/pod/c", hier).join_self()   # pure v1
    assert written() == {"cpu": ("0", ""), "memory": ("0", ""), "unified": ("", "")}
    monkeypatch.setattr(threading, "active_count", lambda: 2)
    V1Cgroup("/pod/c", hier, str(tmp_path / "unified")).join_self(unified_joined=True)
    pid = str(os.getpid())
    assert written() == {"cpu": ("", pid), "memory": ("", pid), "unified": ("", pid)}


def test_v2_join_self_writes_cgroup_procs_unless_cloned_in(tmp_path: Path) -> None:
    _cgroup_tree(tmp_path, ("",))
    procs = tmp_path / "pod/c/cgroup.procs"
    V2Cgroup("/pod/c", str(tmp_path)).join_self(unified_joined=True)
    assert procs.read_text() == ""
    V2Cgroup("/pod/c", str(tmp_path)).join_self()
    assert procs.read_text() == str(os.getpid())
