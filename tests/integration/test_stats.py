"""Container and pod stats through the real gRPC API: CPU, memory, writable layer, network,
filters, the Stream* variants and the cAdvisor-style metrics."""
from __future__ import annotations

import json
import os
import subprocess
import time
from typing import Any

import grpc

from proto import api_pb2
from tests.support import pods
from tests.support.containers import ContainerEnv
from tests.support.cri_client import rpc_error

MiB = 1 << 20


def _stats(env: ContainerEnv, cid: str) -> api_pb2.ContainerStats:
    return env.cri.ContainerStats(api_pb2.ContainerStatsRequest(container_id=cid)).stats


def _list(env: ContainerEnv, **flt: Any) -> list[str]:
    req = api_pb2.ListContainerStatsRequest(
        filter=api_pb2.ContainerStatsFilter(**flt) if flt else None)
    return [s.attributes.id for s in env.cri.ListContainerStats(req).stats]


def _wait_log(env: ContainerEnv, cid: str, text: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not any(line.strip() == text for _, line in env.log_lines(cid)):
        assert time.monotonic() < deadline, f"{cid} never logged {text!r}"
        time.sleep(0.05)


def test_busy_container_cpu_grows_with_nano_cores_from_the_second_sample(
        container_env: ContainerEnv) -> None:
    env = container_env
    cid = env.run(["sh", "-c", "while :; do :; done"])
    first = _stats(env, cid)
    assert first.attributes.id == cid
    assert first.attributes.metadata.name == env.status(cid).metadata.name
    assert not first.cpu.HasField("usage_nano_cores")  # a rate needs two samples
    time.sleep(1.0)
    second = _stats(env, cid)
    used = (second.cpu.usage_core_nano_seconds.value
            - first.cpu.usage_core_nano_seconds.value)
    elapsed = second.cpu.timestamp - first.cpu.timestamp
    assert elapsed > 0.9e9
    assert used > 0.2e9, used   # a spinning shell, even on a busy 2-core machine
    assert second.cpu.usage_nano_cores.value > 0.2e9
    assert abs(second.cpu.usage_nano_cores.value - used * 1e9 / elapsed) < 0.05e9
    env.remove(cid)


def test_memory_near_what_the_container_allocated_and_writable_layer(
        container_env: ContainerEnv) -> None:
    env = container_env
    # 48 MiB of tmpfs pages (charged to the container's memory cgroup, never reclaimable as
    # file cache) and an 8 MiB file in the writable layer
    script = ("dd if=/dev/zero of=/dev/shm/fill bs=1M count=48 2>/dev/null && "
              "dd if=/dev/zero of=/big bs=1M count=8 2>/dev/null && sync && echo ready && "
              "exec sleep 1000")
    res = api_pb2.LinuxContainerResources(memory_limit_in_bytes=256 * MiB)
    cid = env.run(["sh", "-c", script], linux=api_pb2.LinuxContainerConfig(resources=res))
    _wait_log(env, cid, "ready")
    st = _stats(env, cid)
    mem = st.memory
    assert 48 * MiB <= mem.working_set_bytes.value <= (48 + 8 + 32) * MiB, mem
    assert mem.usage_bytes.value >= mem.working_set_bytes.value
    assert mem.page_faults.value > 0 and mem.timestamp > 0
    assert mem.available_bytes.value == 256 * MiB - mem.working_set_bytes.value
    assert st.swap.timestamp > 0
    layer = st.writable_layer
    assert 8 * MiB <= layer.used_bytes.value <= 9 * MiB, layer
    assert layer.inodes_used.value >= 1 and layer.fs_id.mountpoint.startswith("/")
    env.remove(cid)


def test_list_container_stats_filters_and_states(container_env: ContainerEnv) -> None:
    env = container_env
    running = env.run(["sleep", "1000"], labels={"stats": "a", "tier": "x"})
    created = env.create(env.config(["sleep", "1000"], labels={"stats": "b"}))
    exited = env.run(["true"], labels={"stats": "c"})
    env.wait_exit(exited)
    listed = _list(env)
    # created-but-not-started containers are listed (kubelet expects them); exited are not
    assert running in listed and created in listed and exited not in listed
    assert _list(env, id=running) == [running]
    assert _list(env, id=running[:12]) == [running]       # id prefix, as crictl passes it
    assert set(_list(env, pod_sandbox_id=env.pod_id)) >= {running, created}
    assert _list(env, pod_sandbox_id="0" * 64) == []
    assert _list(env, label_selector={"stats": "a"}) == [running]
    assert _list(env, label_selector={"stats": "a", "tier": "y"}) == []
    assert _list(env, id="f" * 64) == []
    # the streaming variant answers the same set
    streamed = [s.attributes.id for resp in env.cri.StreamContainerStats(
        api_pb2.StreamContainerStatsRequest(
            filter=api_pb2.ContainerStatsFilter(pod_sandbox_id=env.pod_id)))
        for s in resp.container_stats]
    assert sorted(streamed) == sorted(_list(env, pod_sandbox_id=env.pod_id))
    # one container: any state answers; an unknown id is NOT_FOUND
    assert _stats(env, created).attributes.id == created
    assert _stats(env, exited).attributes.labels["stats"] == "c"
    err = rpc_error(env.cri.ContainerStats, api_pb2.ContainerStatsRequest(container_id="f" * 64))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    err = rpc_error(env.cri.ContainerStats, api_pb2.ContainerStatsRequest(container_id=""))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    for cid in (running, created, exited):
        env.remove(cid)


def _pod_stats(env: ContainerEnv, pod_id: str) -> api_pb2.PodSandboxStats:
    return env.cri.PodSandboxStats(api_pb2.PodSandboxStatsRequest(pod_sandbox_id=pod_id)).stats


def test_pod_stats_network_counters_grow_after_traffic(container_env: ContainerEnv) -> None:
    env = container_env
    cid = env.run(["sleep", "1000"])
    ip = pods.status(env.cri, env.pod_id).status.network.ip
    assert ip.startswith("10.233."), ip     # the tests' own subnet: nothing else is pinged
    before = _pod_stats(env, env.pod_id)
    assert before.attributes.id == env.pod_id
    assert before.attributes.metadata.name == env.pod_config.metadata.name
    net = before.linux.network
    assert net.default_interface.name == "eth0"
    assert "eth0" in [i.name for i in net.interfaces]
    r = subprocess.run(["busybox", "ping", "-c", "3", "-i", "0.2", "-W", "2", "-s", "1000", ip],
                       check=False, capture_output=True, text=True, timeout=20)
    assert r.returncode == 0, r.stdout + r.stderr
    after = _pod_stats(env, env.pod_id).linux
    rx = after.network.default_interface.rx_bytes.value - net.default_interface.rx_bytes.value
    tx = after.network.default_interface.tx_bytes.value - net.default_interface.tx_bytes.value
    assert rx >= 3 * 1000 and tx >= 3 * 1000, (rx, tx)
    # the pod's cgroup holds its containers: CPU, memory and processes are there
    assert after.cpu.usage_core_nano_seconds.value > 0
    assert after.memory.working_set_bytes.value > 0
    assert after.process.process_count.value >= 1
    assert cid in [c.attributes.id for c in after.containers]
    env.remove(cid)


def test_list_pod_stats_filters_and_only_ready_pods(container_env: ContainerEnv) -> None:
    env = container_env
    other = pods.run_pod(env.cri, pods.pod_config(labels={"stats-pod": "other"}))
    stopped = pods.run_pod(env.cri, pods.pod_config(labels={"stats-pod": "stopped"}))
    try:
        pods.stop(env.cri, stopped)

        def ids(**flt: Any) -> list[str]:
            req = api_pb2.ListPodSandboxStatsRequest(
                filter=api_pb2.PodSandboxStatsFilter(**flt) if flt else None)
            return [s.attributes.id for s in env.cri.ListPodSandboxStats(req).stats]

        everything = ids()
        assert env.pod_id in everything and other in everything
        assert stopped not in everything                   # like containerd: ready pods only
        assert ids(id=other[:10]) == [other]
        assert ids(label_selector={"stats-pod": "other"}) == [other]
        assert ids(label_selector={"stats-pod": "stopped"}) == []
        streamed = [s.attributes.id for resp in env.cri.StreamPodSandboxStats(
            api_pb2.StreamPodSandboxStatsRequest()) for s in resp.pod_sandbox_stats]
        assert sorted(streamed) == sorted(everything)
        # a stopped pod still answers on its own, without network figures
        alone = _pod_stats(env, stopped)
        assert alone.attributes.id == stopped and not alone.linux.HasField("network")
        err = rpc_error(env.cri.PodSandboxStats,
                        api_pb2.PodSandboxStatsRequest(pod_sandbox_id="e" * 64))
        assert err.code() == grpc.StatusCode.NOT_FOUND
    finally:
        for pod in (other, stopped):
            pods.stop_and_remove(env.cri, pod)


def _net_dev_files_open(pid: int) -> set[str]:
    """The /proc/<pid>/net/dev files process pid holds open."""
    out = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("/proc/") and target.endswith("/net/dev"):
            out.add(target)
    return out


def test_list_pod_stats_lets_go_of_a_pod_that_is_no_longer_listed(
        daemon: Any, container_env: ContainerEnv) -> None:
    """An unfiltered ListPodSandboxStats keeps each pod's /proc/<pause>/net/dev open (which
    holds the pod's network namespace) only while the pod is listed: the List after its
    StopPodSandbox closes it; a filtered List keeps nothing open."""
    env = container_env
    pod = pods.run_pod(env.cri, pods.pod_config(labels={"stats-pod": "netns"}))
    try:
        info = json.loads(env.cri.PodSandboxStatus(api_pb2.PodSandboxStatusRequest(
            pod_sandbox_id=pod, verbose=True)).info["info"])
        mine = f"/proc/{info['pid']}/net/dev"
        daemon_pid = daemon.proc.pid
        assert mine not in _net_dev_files_open(daemon_pid)
        env.cri.ListPodSandboxStats(api_pb2.ListPodSandboxStatsRequest(
            filter=api_pb2.PodSandboxStatsFilter(id=pod)))
        assert mine not in _net_dev_files_open(daemon_pid)
        listed = env.cri.ListPodSandboxStats(api_pb2.ListPodSandboxStatsRequest()).stats
        ours = next(s for s in listed if s.attributes.id == pod)
        assert ours.linux.network.default_interface.name == "eth0"
        assert mine in _net_dev_files_open(daemon_pid)
        again = env.cri.ListPodSandboxStats(api_pb2.ListPodSandboxStatsRequest()).stats
        assert next(s for s in again if s.attributes.id == pod).linux.network.HasField(
            "default_interface")
        pods.stop(env.cri, pod)
        env.cri.ListPodSandboxStats(api_pb2.ListPodSandboxStatsRequest())
        assert mine not in _net_dev_files_open(daemon_pid)
    finally:
        pods.stop_and_remove(env.cri, pod)


def test_metric_descriptors_and_pod_metrics(container_env: ContainerEnv) -> None:
    env = container_env
    cid = env.run(["sh", "-c", "while :; do :; done"])
    try:
        descs = env.cri.ListMetricDescriptors(api_pb2.ListMetricDescriptorsRequest()).descriptors
        names = {d.name for d in descs}
        assert {"container_cpu_usage_seconds_total", "container_memory_working_set_bytes",
                "container_network_receive_bytes_total",
                "container_network_transmit_bytes_total"} <= names
        time.sleep(1.1)   # at least one whole CPU second counted
        resp = env.cri.ListPodSandboxMetrics(api_pb2.ListPodSandboxMetricsRequest())
        ours = next(p for p in resp.pod_metrics if p.pod_sandbox_id == env.pod_id)
        keys = {d.name: list(d.label_keys) for d in descs}
        net = [m for m in ours.metrics if m.name == "container_network_receive_bytes_total"]
        assert net and net[0].label_values[-1] == "eth0"
        assert len(net[0].label_values) == len(keys[net[0].name])
        ctr = next(c for c in ours.container_metrics if c.container_id == cid)
        by_name = {m.name: m for m in ctr.metrics}
        assert set(by_name) <= names
        cpu = by_name["container_cpu_usage_seconds_total"]
        assert cpu.metric_type == api_pb2.COUNTER and cpu.value.value >= 0
        ws = by_name["container_memory_working_set_bytes"]
        assert ws.metric_type == api_pb2.GAUGE and ws.value.value > 0
        labels = dict(zip(keys[ws.name], ws.label_values, strict=True))
        assert labels["id"] == cid and labels["pod"] == env.pod_config.metadata.name
        assert labels["namespace"] == env.pod_config.metadata.namespace
        streamed = [p.pod_sandbox_id for r in env.cri.StreamPodSandboxMetrics(
            api_pb2.StreamPodSandboxMetricsRequest()) for p in r.pod_sandbox_metrics]
        assert env.pod_id in streamed
    finally:
        env.remove(cid)


def test_list_container_stats_covers_many_containers(container_env: ContainerEnv) -> None:
    """Every running container is listed, call after call (its cost is a bench figure)."""
    env = container_env
    cids = [env.run(["sleep", "1000"]) for _ in range(12)]
    try:
        for _ in range(3):
            assert set(cids) <= set(_list(env))
    finally:
        for cid in cids:
            env.remove(cid)
