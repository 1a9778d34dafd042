"""cgroup v2 with every controller, cgroupfs driver, through the real gRPC API (VM leg).

Each check reads the live cgroup files the daemon wrote, or what a process inside a container
sees; the fake-tree unit tests (tests/unit/test_cgroups_logic.py) cover the same code paths
without a kernel.
"""
from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from proto import api_pb2
from runtime.cgroups.resources import shares_to_weight
from tests.support.containers import ContainerEnv
from tests.support.daemon import PycriDaemon

MiB = 1 << 20
ROOT = Path("/sys/fs/cgroup")
CONTROLLERS = {"cpuset", "cpu", "io", "memory", "hugetlb", "pids"}


@pytest.fixture(scope="module")
def env(daemon: PycriDaemon) -> Iterator[ContainerEnv]:
    with ContainerEnv(daemon.c) as e:
        yield e


def _cg(env: ContainerEnv, cid: str) -> Path:
    return ROOT / env.info(cid)["runtimeSpec"]["cgroup"]["path"].lstrip("/")


def _read(d: Path, name: str) -> str:
    return (d / name).read_text().strip()




def test_resources_controllers_and_leaves(env: ContainerEnv, daemon: PycriDaemon) -> None:
    res = api_pb2.LinuxContainerResources(
        cpu_shares=512, cpu_period=100000, cpu_quota=50000, cpuset_cpus="0", cpuset_mems="0",
        memory_limit_in_bytes=64 * MiB, memory_swap_limit_in_bytes=96 * MiB,
        hugepage_limits=[api_pb2.HugepageLimit(page_size="2MB", limit=4 * MiB)],
        unified={"memory.high": str(60 * MiB), "io.weight": "default 50", "pids.max": "77"})
    cid = env.run(["sleep", "1000"], linux=api_pb2.LinuxContainerConfig(resources=res))
    cg = _cg(env, cid)
    assert _read(cg, "cpu.weight") == str(shares_to_weight(512))
    assert _read(cg, "cpu.max") == "50000 100000"
    assert _read(cg, "cpuset.cpus") == "0" and _read(cg, "cpuset.mems") == "0"
    assert _read(cg, "memory.max") == str(64 * MiB)
    assert _read(cg, "memory.swap.max") == str(32 * MiB)       # v2 counts swap alone
    assert _read(cg, "hugetlb.2MB.max") == str(4 * MiB)
    assert _read(cg, "memory.high") == str(60 * MiB)           # unified keys win
    assert _read(cg, "io.weight") == "default 50"
    assert _read(cg, "pids.max") == "77"
    pid = env.info(cid)["pid"]
    assert _read(cg, "cgroup.procs").split() == [str(pid)]
    # every level from the root down delegates the controllers; no process in an inner node
    parent = Path(daemon.cgroup_parent.lstrip("/"))
    inner = [ROOT / parent, *[p for p in cg.parents if (ROOT / parent) in p.parents]]
    for node in [ROOT, *sorted(set(inner), key=lambda p: len(p.parts))]:
        enabled = set(_read(node, "cgroup.subtree_control").split())
        assert enabled >= CONTROLLERS, (node, enabled)
        if node != ROOT:
            assert _read(node, "cgroup.procs") == "", node
    env.remove(cid)
    assert not cg.exists()


def test_update_container_resources_live(env: ContainerEnv) -> None:
    res = api_pb2.LinuxContainerResources(cpu_shares=1024, memory_limit_in_bytes=128 * MiB)
    cid = env.run(["sleep", "1000"], linux=api_pb2.LinuxContainerConfig(resources=res))
    cg = _cg(env, cid)
    env.cri.UpdateContainerResources(api_pb2.UpdateContainerResourcesRequest(
        container_id=cid, linux=api_pb2.LinuxContainerResources(
            memory_limit_in_bytes=256 * MiB, cpu_shares=2048, cpu_quota=20000,
            cpu_period=100000, unified={"memory.low": str(8 * MiB)})))
    assert _read(cg, "memory.max") == str(256 * MiB)
    assert _read(cg, "cpu.weight") == str(shares_to_weight(2048))
    assert _read(cg, "cpu.max") == "20000 100000"
    assert _read(cg, "memory.low") == str(8 * MiB)
    linux = env.status(cid).resources.linux
    assert (linux.memory_limit_in_bytes, linux.cpu_shares, linux.cpu_quota) == \
        (256 * MiB, 2048, 20000)
    env.remove(cid)


def test_cgroup_namespace_and_oom_killed(env: ContainerEnv) -> None:
    assert env.output(["cat", "/proc/self/cgroup"]) == "0::/\n"
    # /sys/fs/cgroup inside is the container's own cgroup
    out = env.output(["sh", "-c", "cat /sys/fs/cgroup/memory.max"], linux=api_pb2.LinuxContainerConfig(
        resources=api_pb2.LinuxContainerResources(memory_limit_in_bytes=48 * MiB)))
    assert out == f"{48 * MiB}\n"
    env.run_until_oom_killed()


# Opening /dev/kmsg write-only needs no capability (reading it needs CAP_SYSLOG where
# dmesg_restrict is set), so "denied" here can only be the device filter.
_PROBE = ("for d in /dev/null /dev/kmsg; do if [ ! -c $d ]; then echo $d missing; "
          "elif (: > $d) 2>/dev/null; then echo $d ok; else echo $d denied; fi; done; "
          "mknod /tmp/k c 1 11 && "
          "( (: > /tmp/k) 2>/dev/null && echo mknod ok || echo mknod denied)")


def test_device_filter_allows_and_denies_real_nodes(env: ContainerEnv) -> None:
    assert os.path.exists("/dev/kmsg")
    plain = env.output(["sh", "-c", _PROBE])
    assert plain.split("\n")[:3] == ["/dev/null ok", "/dev/kmsg missing", "mknod denied"], plain
    # a requested device is allowed (rule from its real major:minor), others still denied
    dev = api_pb2.Device(host_path="/dev/kmsg", container_path="/dev/kmsg", permissions="w")
    given = env.output(["sh", "-c", _PROBE], devices=[dev])
    assert given.split("\n")[:3] == ["/dev/null ok", "/dev/kmsg ok", "mknod ok"], given


def test_stats_from_v2_files(env: ContainerEnv) -> None:
    # 8 MiB in a file of the writable layer (tmpfs below it in the VM: charged as shmem)
    cid = env.run(["sh", "-c", "head -c 8388608 /dev/zero > /tmp/blob; while :; do :; done"])
    try:
        cg = _cg(env, cid)
        deadline = time.monotonic() + 120
        while int(_read(cg, "memory.current")) < 8 * MiB and time.monotonic() < deadline:
            time.sleep(0.5)
        st = env.cri.ContainerStats(api_pb2.ContainerStatsRequest(container_id=cid)).stats
        assert 0 < st.cpu.usage_core_nano_seconds.value <= _usage_usec(cg) * 1000 + 10**9
        current = int(_read(cg, "memory.current"))
        assert 8 * MiB < st.memory.working_set_bytes.value <= current + 4 * MiB
        assert st.memory.rss_bytes.value > 0
        listed = env.cri.ListContainerStats(api_pb2.ListContainerStatsRequest()).stats
        assert cid in {s.attributes.id for s in listed}
        # the metric is whole seconds (UInt64Value): let the loop burn more than one first
        while _usage_usec(cg) < 1_200_000 and time.monotonic() < deadline:
            time.sleep(0.2)
        resp = env.cri.ListPodSandboxMetrics(api_pb2.ListPodSandboxMetricsRequest())
        ours = next(p for p in resp.pod_metrics if p.pod_sandbox_id == env.pod_id)
        ctr = next(c for c in ours.container_metrics if c.container_id == cid)
        by_name = {m.name: m.value.value for m in ctr.metrics}
        assert 1 <= by_name["container_cpu_usage_seconds_total"] <= _usage_usec(cg) // 10**6
        assert by_name["container_memory_working_set_bytes"] > 8 * MiB
        pod_stats = env.cri.PodSandboxStats(api_pb2.PodSandboxStatsRequest(
            pod_sandbox_id=env.pod_id)).stats
        assert pod_stats.linux.memory.working_set_bytes.value >= \
            st.memory.working_set_bytes.value - MiB
    finally:
        env.remove(cid)
    assert not cg.exists()


def _usage_usec(cg: Path) -> int:
    return int(next(line.split()[1] for line in _read(cg, "cpu.stat").splitlines()
                    if line.startswith("usage_usec")))


def _v2_figures(cg: Path) -> dict[str, int]:
    """What kubelet/cAdvisor make of a v2 cgroup's files: working set = memory.current -
    inactive_file, rss = anon, cpu = usage_usec, swap = memory.swap.current."""
    mstat = dict(line.split() for line in _read(cg, "memory.stat").splitlines())
    cpu = dict(line.split() for line in _read(cg, "cpu.stat").splitlines())
    current = int(_read(cg, "memory.current"))
    return {"usage": current, "working_set": current - int(mstat["inactive_file"]),
            "rss": int(mstat["anon"]), "faults": int(mstat["pgfault"]),
            "major_faults": int(mstat["pgmajfault"]), "cpu_ns": int(cpu["usage_usec"]) * 1000,
            "swap": int(_read(cg, "memory.swap.current"))}


def _between(value: int, key: str, before: dict[str, int], after: dict[str, int],
             slack: int) -> None:
    low, high = sorted((before[key], after[key]))
    assert low - slack <= value <= high + slack, (key, value, before[key], after[key])


def test_stats_mean_what_the_v2_files_say(env: ContainerEnv) -> None:
    """Each ContainerStats and PodSandboxStats figure against the v2 file it comes from, the
    files read just before and after the call (a sleeping container: they barely move)."""
    cid = env.run(["sleep", "1000"], linux=api_pb2.LinuxContainerConfig(
        resources=api_pb2.LinuxContainerResources(memory_limit_in_bytes=64 * MiB)))
    try:
        cg = _cg(env, cid)
        for d, call in (
                (cg, lambda: env.cri.ContainerStats(
                    api_pb2.ContainerStatsRequest(container_id=cid)).stats),
                (cg.parent, lambda: env.cri.PodSandboxStats(
                    api_pb2.PodSandboxStatsRequest(pod_sandbox_id=env.pod_id)).stats.linux)):
            before = _v2_figures(d)
            st = call()
            after = _v2_figures(d)
            mem = st.memory
            _between(mem.usage_bytes.value, "usage", before, after, 256 << 10)
            _between(mem.working_set_bytes.value, "working_set", before, after, 256 << 10)
            _between(mem.rss_bytes.value, "rss", before, after, 256 << 10)
            _between(mem.page_faults.value, "faults", before, after, 64)
            _between(mem.major_page_faults.value, "major_faults", before, after, 4)
            _between(st.cpu.usage_core_nano_seconds.value, "cpu_ns", before, after, 10**7)
            if d == cg:
                _between(st.swap.swap_usage_bytes.value, "swap", before, after, 0)
                assert mem.available_bytes.value == 64 * MiB - mem.working_set_bytes.value
            else:
                assert st.process.process_count.value == int(_read(d, "pids.current"))
    finally:
        env.remove(cid)



def test_exec_is_cloned_into_the_container_cgroup(env: ContainerEnv) -> None:
    """ExecSync on v2: the shim clones the process straight into the container's cgroup
    (clone3 CLONE_INTO_CGROUP, no cgroup.procs write); it is where the init is, the root of
    the container's cgroup namespace."""
    cid = env.run(["sleep", "1000"])
    try:
        out = env.exec_sync(cid, ["sh", "-c", "cat /proc/self/cgroup /proc/1/cgroup"])
        assert out.exit_code == 0, out
        assert out.stdout.decode().split() == ["0::/", "0::/"], out
    finally:
        env.remove(cid)


TRACING = Path("/sys/kernel/tracing")
ATTACH_EVENT = TRACING / "events" / "cgroup" / "cgroup_attach_task"


@pytest.fixture
def attach_trace() -> Iterator[Path]:
    """The kernel's cgroup_attach_task tracepoint (one line per process moved into a cgroup:
    a cgroup.procs write, or systemd moving one), on for the test; yields the trace file."""
    if not (TRACING / "trace").exists():
        TRACING.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tracefs", "nodev", str(TRACING)], check=True)
    assert ATTACH_EVENT.is_dir(), "this guest kernel has no cgroup tracepoints"
    (TRACING / "trace").write_text("")
    (ATTACH_EVENT / "enable").write_text("1")
    try:
        yield TRACING / "trace"
    finally:
        (ATTACH_EVENT / "enable").write_text("0")
        (TRACING / "trace").write_text("")


def test_no_process_is_moved_into_a_container_cgroup(env: ContainerEnv,
                                                     attach_trace: Path) -> None:
    """v2: CreateContainer clones the container's process into its cgroup (the init that
    becomes its keeper never enters it) as ExecSync clones its processes
    (runtime.cgroups.clone_into): the kernel migrates nothing into the container's cgroup.
    A migration takes the cgroup threadgroup lock for writing, which waits for an RCU grace
    period; the tracepoint sees every one."""
    probe = ROOT / "pycri-trace-probe"
    probe.mkdir()
    child = os.fork()
    if child == 0:
        time.sleep(30)
        os._exit(0)
    try:   # the tracepoint works: a cgroup.procs write is seen
        (probe / "cgroup.procs").write_text(str(child))
        (ROOT / "cgroup.procs").write_text(str(child))
        assert f"dst_path=/{probe.name} " in attach_trace.read_text()
    finally:
        os.kill(child, 9)
        os.waitpid(child, 0)
        probe.rmdir()
    cid = env.run(["sleep", "1000"])
    try:
        assert env.exec_sync(cid, ["true"]).exit_code == 0
        cg = "/" + str(_cg(env, cid).relative_to(ROOT))
        moved = [line for line in attach_trace.read_text().splitlines()
                 if f"dst_path={cg} " in line or f"dst_path={cg}/" in line]
        assert moved == [], moved
        assert _read(_cg(env, cid), "cgroup.procs").split() == [str(env.info(cid)["pid"])]
    finally:
        env.remove(cid)
