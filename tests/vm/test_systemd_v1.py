"""The systemd cgroup driver on cgroup v1: systemd is PID 1 with its hybrid layout (v1
controllers, its own cgroup2 at /sys/fs/cgroup/unified; `PYCRI_VM_SYSTEMD=1
PYCRI_VM_CGROUP=hybrid scripts/vm.sh`, collected only there). The same units as on v2
(tests/vm/test_systemd_driver.py), checked against the v1 controllers' files.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

from proto import api_pb2
from tests.support import pods
from tests.support.containers import ContainerEnv
from tests.vm import test_systemd_driver as v2
from tests.vm.test_systemd_driver import gone, show

sd_daemon, env = v2.sd_daemon, v2.env   # the same daemon and pod fixtures as on v2

MiB = 1 << 20
ROOT = Path("/sys/fs/cgroup")
CONTROLLERS = ("memory", "cpu,cpuacct", "pids", "cpuset", "devices", "freezer", "unified")


def _read(controller: str, path: str, name: str) -> str:
    return (ROOT / controller / path.lstrip("/") / name).read_text().strip()


def test_units_and_v1_files(env: ContainerEnv) -> None:
    pod_path = str(pods.info(env.cri, env.pod_id)["cgroupPath"])
    pod_slice = pod_path.rsplit("/", 1)[-1]
    assert show(pod_slice)["ActiveState"] == "active"
    pause = show(f"pycri-{env.pod_id}.scope")
    assert (pause["ActiveState"], pause["Delegate"], pause["Slice"]) == \
        ("active", "yes", pod_slice)
    res = api_pb2.LinuxContainerResources(cpu_shares=512, cpu_period=100000, cpu_quota=50000,
                                          memory_limit_in_bytes=64 * MiB)
    cid = env.run(["sleep", "1000"], linux=api_pb2.LinuxContainerConfig(resources=res))
    unit = f"pycri-{cid}.scope"
    u = show(unit)
    assert (u["ActiveState"], u["Delegate"], u["Slice"]) == ("active", "yes", pod_slice)
    path = u["ControlGroup"]
    assert path == env.info(cid)["runtimeSpec"]["cgroup"]["path"] or \
        path.endswith(f"/{unit}"), (path, env.info(cid)["runtimeSpec"]["cgroup"])
    pid = str(env.info(cid)["pid"])
    for controller in CONTROLLERS:   # the container is in its scope in every hierarchy
        assert _read(controller, path, "cgroup.procs").split() == [pid], controller
    assert _read("memory", path, "memory.limit_in_bytes") == str(64 * MiB)
    assert _read("cpu,cpuacct", path, "cpu.shares") == "512"
    assert _read("cpu,cpuacct", path, "cpu.cfs_quota_us") == "50000"
    # systemd re-applies the unit from its properties: the files keep the values
    subprocess.run(["systemctl", "daemon-reload"], check=True)
    assert _read("memory", path, "memory.limit_in_bytes") == str(64 * MiB)
    assert _read("cpu,cpuacct", path, "cpu.cfs_quota_us") == "50000"
    env.cri.UpdateContainerResources(api_pb2.UpdateContainerResourcesRequest(
        container_id=cid, linux=api_pb2.LinuxContainerResources(
            memory_limit_in_bytes=128 * MiB, cpu_shares=1024)))
    assert _read("memory", path, "memory.limit_in_bytes") == str(128 * MiB)
    assert _read("cpu,cpuacct", path, "cpu.shares") == "1024"
    st = env.cri.ContainerStats(api_pb2.ContainerStatsRequest(container_id=cid)).stats
    assert st.memory.usage_bytes.value > 0
    env.remove(cid)
    assert gone(unit)
    assert not any((ROOT / c / path.lstrip("/")).exists() for c in CONTROLLERS)


def test_oom_killed_and_no_unit_left(env: ContainerEnv) -> None:
    cid = env.run_until_oom_killed()
    assert gone(f"pycri-{cid}.scope")
    pod_id, pod_path = env.pod_id, str(pods.info(env.cri, env.pod_id)["cgroupPath"])
    pods.stop_and_remove(env.cri, pod_id)
    env.pod_id = ""
    assert gone(pod_path.rsplit("/", 1)[-1]) and gone(f"pycri-{pod_id}.scope")
    assert not any((ROOT / c / pod_path.lstrip("/")).exists() for c in CONTROLLERS)
