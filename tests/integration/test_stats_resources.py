"""UpdateContainerResources and UpdatePodSandboxResources through the real gRPC API: the live
cgroup files change, ContainerStatus.resources follows, bad input and unknown ids are refused."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import grpc
import pytest

from proto import api_pb2
from runtime.cgroups import mode
from tests.support import pods
from tests.support.containers import ContainerEnv
from tests.support.cri_client import rpc_error

MiB = 1 << 20

pytestmark = pytest.mark.skipif(mode.detect_mode() == "v2",
                                reason="these checks read the cgroup v1 files of this host")


def _cgroup_dir(env: ContainerEnv, cid: str, controller: str) -> Path:
    path = env.info(cid)["runtimeSpec"]["cgroup"]["path"]
    return Path(mode.v1_hierarchies()[controller]) / path.lstrip("/")


def _read(d: Path, name: str) -> int:
    return int((d / name).read_text().strip())


def _update(env: ContainerEnv, cid: str, **res: Any) -> None:
    env.cri.UpdateContainerResources(api_pb2.UpdateContainerResourcesRequest(
        container_id=cid, linux=api_pb2.LinuxContainerResources(**res)))


def test_update_changes_the_live_cgroup_and_the_status(container_env: ContainerEnv) -> None:
    env = container_env
    start = api_pb2.LinuxContainerResources(cpu_shares=512, cpu_period=100000, cpu_quota=50000,
                                            memory_limit_in_bytes=128 * MiB)
    cid = env.run(["sleep", "1000"], linux=api_pb2.LinuxContainerConfig(resources=start))
    cpu, memory = _cgroup_dir(env, cid, "cpu"), _cgroup_dir(env, cid, "memory")
    assert _read(memory, "memory.limit_in_bytes") == 128 * MiB
    assert (_read(cpu, "cpu.shares"), _read(cpu, "cpu.cfs_quota_us")) == (512, 50000)

    _update(env, cid, memory_limit_in_bytes=256 * MiB, cpu_shares=1024, cpu_quota=20000)
    assert _read(memory, "memory.limit_in_bytes") == 256 * MiB
    assert _read(cpu, "cpu.shares") == 1024
    assert (_read(cpu, "cpu.cfs_quota_us"), _read(cpu, "cpu.cfs_period_us")) == (20000, 100000)
    linux = env.status(cid).resources.linux
    assert (linux.memory_limit_in_bytes, linux.cpu_shares, linux.cpu_quota, linux.cpu_period) \
        == (256 * MiB, 1024, 20000, 100000)
    spec_res = env.info(cid)["runtimeSpec"]["cgroup"]["resources"]
    assert spec_res["memory_limit_in_bytes"] == 256 * MiB

    # fields left at zero keep their value; a lower limit is applied as well
    _update(env, cid, memory_limit_in_bytes=64 * MiB)
    assert _read(memory, "memory.limit_in_bytes") == 64 * MiB
    if (memory / "memory.memsw.limit_in_bytes").exists():   # still no swap, as containerd
        assert _read(memory, "memory.memsw.limit_in_bytes") == 64 * MiB
    assert _read(cpu, "cpu.shares") == 1024
    linux = env.status(cid).resources.linux
    assert (linux.memory_limit_in_bytes, linux.cpu_shares) == (64 * MiB, 1024)
    env.remove(cid)


def test_update_created_and_exited_containers(container_env: ContainerEnv) -> None:
    env = container_env
    created = env.create(env.config(["sleep", "1000"]))
    _update(env, created, cpu_shares=300)
    assert _read(_cgroup_dir(env, created, "cpu"), "cpu.shares") == 300  # init waits in it
    env.start_container(created)
    assert env.status(created).resources.linux.cpu_shares == 300
    exited = env.run(["true"])
    env.wait_exit(exited)
    _update(env, exited, memory_limit_in_bytes=32 * MiB)   # as containerd: recorded only
    assert env.status(exited).resources.linux.memory_limit_in_bytes == 32 * MiB
    for cid in (created, exited):
        env.remove(cid)


def test_update_refuses_bad_input_and_unknown_ids(container_env: ContainerEnv) -> None:
    env = container_env
    cid = env.run(["sleep", "1000"])
    before = env.status(cid).resources.linux
    for bad in ({"memory_limit_in_bytes": -5}, {"cpu_shares": -1}, {"oom_score_adj": 5000},
                {"cpuset_cpus": "not-a-cpu-list"}):
        err = rpc_error(_update, env, cid, **bad)
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (bad, err.details())
    assert env.status(cid).resources.linux == before   # nothing half-applied
    err = rpc_error(_update, env, "f" * 64, cpu_shares=100)
    assert err.code() == grpc.StatusCode.NOT_FOUND
    err = rpc_error(_update, env, "", cpu_shares=100)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    env.remove(cid)


def test_update_pod_sandbox_resources(container_env: ContainerEnv) -> None:
    env = container_env
    # a pod without cgroup_parent gets a cgroup of its own (pycri's): the update applies there
    pod_id = pods.run_pod(env.cri)
    try:
        path = json.loads(env.cri.PodSandboxStatus(api_pb2.PodSandboxStatusRequest(
            pod_sandbox_id=pod_id, verbose=True)).info["info"])["cgroupPath"]
        memory = Path(mode.v1_hierarchies()["memory"]) / path.lstrip("/")
        env.cri.UpdatePodSandboxResources(api_pb2.UpdatePodSandboxResourcesRequest(
            pod_sandbox_id=pod_id,
            resources=api_pb2.LinuxContainerResources(memory_limit_in_bytes=300 * MiB),
            overhead=api_pb2.LinuxContainerResources(memory_limit_in_bytes=20 * MiB)))
        assert _read(memory, "memory.limit_in_bytes") == 320 * MiB
        err = rpc_error(env.cri.UpdatePodSandboxResources,
                        api_pb2.UpdatePodSandboxResourcesRequest(pod_sandbox_id="d" * 64))
        assert err.code() == grpc.StatusCode.NOT_FOUND
        err = rpc_error(env.cri.UpdatePodSandboxResources,
                        api_pb2.UpdatePodSandboxResourcesRequest(
                            pod_sandbox_id=pod_id,
                            resources=api_pb2.LinuxContainerResources(cpu_period=-1)))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        pods.stop_and_remove(env.cri, pod_id)
