"""The systemd cgroup driver for real: systemd is PID 1 in the guest (`PYCRI_VM_SYSTEMD=1
scripts/vm.sh`, collected only there), pods and containers go through the real gRPC API, and
every check asks systemd (systemctl show) and reads the cgroup files systemd and the init wrote.
"""
from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from proto import api_pb2
from runtime.cgroups.resources import shares_to_weight
from tests.support import pods
from tests.support.containers import ContainerEnv
from tests.support.daemon import SLOWDOWN, PycriDaemon

MiB = 1 << 20
ROOT = Path("/sys/fs/cgroup")
SHOW = ("LoadState", "ActiveState", "Delegate", "Slice", "ControlGroup", "MemoryMax",
        "CPUWeight", "CPUQuotaPerSecUSec", "CPUQuotaPeriodUSec", "TasksMax", "AllowedCPUs",
        "MemoryLow", "MemorySwapMax", "MemoryHigh")


def show(unit: str) -> dict[str, str]:
    out = subprocess.run(["systemctl", "show", "--no-pager", "-p", ",".join(SHOW), unit],
                         check=True, capture_output=True, text=True).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def loaded(unit: str) -> bool:
    """systemd has a unit of that name loaded (list-units, unlike show, never loads one)."""
    out = subprocess.run(["systemctl", "list-units", "--all", "--plain", "--no-legend",
                          "--no-pager", unit], check=True, capture_output=True, text=True).stdout
    return any(line.split()[:1] == [unit] for line in out.splitlines())


def gone(unit: str) -> bool:
    """systemd has no unit of that name loaded (stopped and reset, or never there); an
    emptied scope stops by itself and is unloaded a moment later."""
    deadline = time.monotonic() + 5 * SLOWDOWN
    while loaded(unit):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def _read(d: Path, name: str) -> str:
    return (d / name).read_text().strip()


@pytest.fixture(scope="module")
def sd_daemon() -> Iterator[PycriDaemon]:
    d = PycriDaemon(config={"cgroup_driver": "systemd"}).start()
    try:
        yield d
    finally:
        rc = d.stop()
        d.cleanup_dirs()
        assert rc == 0, d.log_tail()


def _top_slice(d: PycriDaemon) -> str:
    return d.cgroup_parent.strip("/").replace("-", "_") + ".slice"


@pytest.fixture(scope="module")
def env(sd_daemon: PycriDaemon) -> Iterator[ContainerEnv]:
    with ContainerEnv(sd_daemon.c) as e:
        yield e
    # the last pod gone: pycri's parent slice is stopped too, no cgroup is left
    assert gone(_top_slice(sd_daemon)), show(_top_slice(sd_daemon))  # not loaded any more
    assert not (ROOT / _top_slice(sd_daemon)).exists()


def _pod_slice(env: ContainerEnv) -> str:
    return str(pods.info(env.cri, env.pod_id)["cgroupPath"]).rsplit("/", 1)[-1]


def test_pod_slice_and_pause_scope_are_units(env: ContainerEnv, sd_daemon: PycriDaemon) -> None:
    path = pods.info(env.cri, env.pod_id)["cgroupPath"]
    top = sd_daemon.cgroup_parent.strip("/").replace("-", "_")
    assert path == f"/{top}.slice/{top}-pod{env.pod_id}.slice"
    slice_unit = _pod_slice(env)
    s = show(slice_unit)
    assert (s["LoadState"], s["ActiveState"], s["ControlGroup"]) == ("loaded", "active", path)
    pause = show(f"pycri-{env.pod_id}.scope")
    assert (pause["ActiveState"], pause["Delegate"], pause["Slice"]) == \
        ("active", "yes", slice_unit)
    procs = _read(ROOT / pause["ControlGroup"].lstrip("/"), "cgroup.procs").split()
    assert len(procs) == 1, procs                      # the pause-holder, alone in its scope
    assert _read(ROOT / path.lstrip("/"), "cgroup.procs") == ""   # none in the slice itself


def test_container_scope_properties_and_files(env: ContainerEnv) -> None:
    res = api_pb2.LinuxContainerResources(
        cpu_shares=512, cpu_period=100000, cpu_quota=50000, cpuset_cpus="0", cpuset_mems="0",
        memory_limit_in_bytes=64 * MiB, memory_swap_limit_in_bytes=96 * MiB,
        hugepage_limits=[api_pb2.HugepageLimit(page_size="2MB", limit=4 * MiB)],
        unified={"memory.high": str(60 * MiB), "pids.max": "77"})
    cid = env.run(["sleep", "1000"], linux=api_pb2.LinuxContainerConfig(resources=res))
    unit = f"pycri-{cid}.scope"
    u = show(unit)
    assert (u["ActiveState"], u["Delegate"], u["Slice"]) == ("active", "yes", _pod_slice(env))
    assert u["MemoryMax"] == str(64 * MiB) and u["MemoryHigh"] == str(60 * MiB)
    assert u["MemorySwapMax"] == str(32 * MiB)
    assert u["CPUWeight"] == str(shares_to_weight(512))
    assert u["CPUQuotaPerSecUSec"] == "500ms" and u["CPUQuotaPeriodUSec"] == "100ms"
    assert u["TasksMax"] == "77" and u["AllowedCPUs"] == "0"
    cg = ROOT / u["ControlGroup"].lstrip("/")
    assert cg == ROOT / env.info(cid)["runtimeSpec"]["cgroup"]["path"].lstrip("/")
    assert _read(cg, "memory.max") == str(64 * MiB)
    assert _read(cg, "memory.high") == str(60 * MiB)
    assert _read(cg, "memory.swap.max") == str(32 * MiB)
    assert _read(cg, "cpu.weight") == str(shares_to_weight(512))
    assert _read(cg, "cpu.max") == "50000 100000"
    assert _read(cg, "pids.max") == "77"
    assert _read(cg, "cpuset.cpus") == "0"
    assert _read(cg, "hugetlb.2MB.max") == str(4 * MiB)      # a file systemd does not own
    # only the container (the daemon's placeholder is gone)
    assert _read(cg, "cgroup.procs").split() == [str(env.info(cid)["pid"])]
    # systemd re-applies the unit (daemon-reload re-realizes every cgroup): the files stay
    subprocess.run(["systemctl", "daemon-reload"], check=True)
    assert _read(cg, "memory.max") == str(64 * MiB) and _read(cg, "cpu.max") == "50000 100000"
    env.remove(cid)
    assert gone(unit) and not cg.exists()


def test_update_container_resources_sets_unit_properties(env: ContainerEnv) -> None:
    cid = env.run(["sleep", "1000"], linux=api_pb2.LinuxContainerConfig(
        resources=api_pb2.LinuxContainerResources(cpu_shares=1024,
                                                  memory_limit_in_bytes=128 * MiB)))
    unit = f"pycri-{cid}.scope"
    cg = ROOT / show(unit)["ControlGroup"].lstrip("/")
    env.cri.UpdateContainerResources(api_pb2.UpdateContainerResourcesRequest(
        container_id=cid, linux=api_pb2.LinuxContainerResources(
            memory_limit_in_bytes=256 * MiB, cpu_shares=2048, cpu_quota=20000,
            cpu_period=100000, unified={"pids.max": "99"})))
    u = show(unit)
    assert u["MemoryMax"] == str(256 * MiB) and u["CPUWeight"] == str(shares_to_weight(2048))
    assert u["CPUQuotaPerSecUSec"] == "200ms" and u["TasksMax"] == "99"
    assert _read(cg, "memory.max") == str(256 * MiB)
    assert _read(cg, "cpu.weight") == str(shares_to_weight(2048))
    assert _read(cg, "cpu.max") == "20000 100000"
    assert _read(cg, "pids.max") == "99"
    env.remove(cid)
    assert gone(unit)


def test_oom_device_filter_and_cgroup_namespace(env: ContainerEnv) -> None:
    assert env.output(["cat", "/proc/self/cgroup"]) == "0::/\n"
    cid = env.run_until_oom_killed()
    assert gone(f"pycri-{cid}.scope")
    probe = ("(: > /dev/null) && echo null ok; [ -c /dev/kmsg ] || echo kmsg missing; "
             "mknod /tmp/k c 1 11 && ( (: > /tmp/k) 2>/dev/null && echo mknod ok "
             "|| echo mknod denied)")
    assert env.output(["sh", "-c", probe]).split("\n")[:3] == \
        ["null ok", "kmsg missing", "mknod denied"]


def test_stats_from_the_scope(env: ContainerEnv) -> None:
    cid = env.run(["sh", "-c", "while :; do :; done"])
    deadline = time.monotonic() + 30 * SLOWDOWN
    st = env.cri.ContainerStats(api_pb2.ContainerStatsRequest(container_id=cid)).stats
    while st.cpu.usage_core_nano_seconds.value == 0 and time.monotonic() < deadline:
        time.sleep(0.5)
        st = env.cri.ContainerStats(api_pb2.ContainerStatsRequest(container_id=cid)).stats
    assert st.cpu.usage_core_nano_seconds.value > 0
    assert st.memory.working_set_bytes.value > 0
    env.remove(cid)


def test_stop_remove_and_restart_leave_no_unit(env: ContainerEnv,
                                              sd_daemon: PycriDaemon) -> None:
    cfg = pods.pod_config(hostname="restart-pod")
    cfg.log_directory = str(env.log_dir)
    pod_id = pods.run_pod(env.cri, cfg)
    cid = env.create(env.config(["sleep", "1000"]), pod_id=pod_id, pod_config=cfg)
    env.start_container(cid)
    units = [f"pycri-{cid}.scope", f"pycri-{pod_id}.scope",
             str(pods.info(env.cri, pod_id)["cgroupPath"]).rsplit("/", 1)[-1]]
    cgroup = ROOT / str(pods.info(env.cri, pod_id)["cgroupPath"]).lstrip("/")
    assert all(show(u)["ActiveState"] == "active" for u in units)
    sd_daemon.kill9()               # the units are systemd's: they outlive the daemon
    assert all(show(u)["ActiveState"] == "active" for u in units)
    sd_daemon.start()
    env.cri = sd_daemon.c
    env.cri.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=pod_id))
    assert gone(units[0]) and gone(units[1]), [show(u) for u in units[:2]]
    env.cri.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pod_id))
    env.created.remove(cid)
    assert all(gone(u) for u in units), [show(u) for u in units]
    assert not cgroup.exists()
