"""CRI ContainerStats / PodSandboxStats from cgroup counters and friends.

usage_nano_cores needs two samples: the collector remembers the last CPU
reading of every container and pod and derives the rate from the previous one
(kubelet's own summary API does the same with cAdvisor data).
"""
from __future__ import annotations

import os
import threading
import time

from cri_server.stats import readers
from cri_server.stats.sources import ContainerSource, PodSource
from proto import api_pb2

# A CPU sample older than this is dropped (and the next reading has no nano cores again).
SAMPLE_FORGET_NS = 600 * 1_000_000_000


def _u64(value: int) -> api_pb2.UInt64Value:
    return api_pb2.UInt64Value(value=max(0, int(value)))


def _mountpoint(path: str) -> str:
    path = os.path.realpath(path)
    while not os.path.ismount(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


class StatsCollector:
    def __init__(self, containers_root: str) -> None:
        self.disk = readers.DiskUsageCache()
        self._fs_mountpoint = _mountpoint(containers_root) if os.path.exists(containers_root) else "/"
        self._lock = threading.Lock()
        self._last_cpu: dict[str, tuple[int, int]] = {}  # id -> (timestamp ns, usage ns)
        self._last_prune = time.time_ns()

    # -- pieces --------------------------------------------------------------
    def _nano_cores(self, key: str, now: int, usage: int) -> int | None:
        with self._lock:
            prev = self._last_cpu.get(key)
            self._last_cpu[key] = (now, usage)
            if now - self._last_prune > SAMPLE_FORGET_NS // 10:
                self._prune(now)
        if prev is None or now <= prev[0] or usage < prev[1]:
            return None
        return int((usage - prev[1]) * 1_000_000_000 / (now - prev[0]))

    def _prune(self, now: int) -> None:
        """Forgets the samples of containers and pods nobody asked about for a while (they
        are gone, most likely); lock held."""
        self._last_prune = now
        for key, (ts, _usage) in list(self._last_cpu.items()):
            if now - ts > SAMPLE_FORGET_NS:
                del self._last_cpu[key]

    def forget(self, key: str) -> None:
        with self._lock:
            self._last_cpu.pop(key, None)

    def _cpu(self, key: str, now: int, raw: dict[str, int]) -> api_pb2.CpuUsage:
        usage = raw.get("cpu_usage_ns", 0)
        cpu = api_pb2.CpuUsage(timestamp=now, usage_core_nano_seconds=_u64(usage))
        rate = self._nano_cores(key, now, usage)
        if rate is not None:
            cpu.usage_nano_cores.CopyFrom(_u64(rate))
        return cpu

    @staticmethod
    def _memory(now: int, raw: dict[str, int], limit: int = 0) -> api_pb2.MemoryUsage:
        working_set = raw.get("memory_working_set_bytes", 0)
        mem = api_pb2.MemoryUsage(
            timestamp=now,
            working_set_bytes=_u64(working_set),
            usage_bytes=_u64(raw.get("memory_usage_bytes", 0)),
            rss_bytes=_u64(raw.get("memory_rss_bytes", 0)),
            page_faults=_u64(raw.get("page_faults", 0)),
            major_page_faults=_u64(raw.get("major_page_faults", 0)))
        if limit > 0:  # as containerd: what is left below the limit
            mem.available_bytes.CopyFrom(_u64(limit - working_set))
        return mem

    # -- containers ----------------------------------------------------------
    def container_stats(self, src: ContainerSource) -> api_pb2.ContainerStats:
        now = time.time_ns()
        raw = readers.cgroup_stats(src.cgroup_path)
        usage = self.disk.get(src.upper_dir) if src.upper_dir else readers.DiskUsage(0, 0)
        return api_pb2.ContainerStats(
            attributes=api_pb2.ContainerAttributes(
                id=src.id, metadata=api_pb2.ContainerMetadata(name=src.name, attempt=src.attempt),
                labels=src.labels, annotations=src.annotations),
            cpu=self._cpu(src.id, now, raw),
            memory=self._memory(now, raw, src.memory_limit),
            swap=api_pb2.SwapUsage(timestamp=now, swap_usage_bytes=_u64(raw.get("swap_usage_bytes", 0))),
            writable_layer=api_pb2.FilesystemUsage(
                timestamp=now,
                fs_id=api_pb2.FilesystemIdentifier(mountpoint=self._fs_mountpoint),
                used_bytes=_u64(usage.bytes), inodes_used=_u64(usage.inodes)))

    # -- pods ----------------------------------------------------------------
    def pod_stats(self, src: PodSource) -> api_pb2.PodSandboxStats:
        now = time.time_ns()
        raw = readers.cgroup_stats(src.cgroup_path)
        containers = [self.container_stats(c) for c in src.containers]
        if not raw and containers:  # no pod cgroup of ours: add the containers up
            raw = _sum([readers.cgroup_stats(c.cgroup_path) for c in src.containers])
        linux = api_pb2.LinuxPodSandboxStats(
            cpu=self._cpu("pod:" + src.id, now, raw),
            memory=self._memory(now, raw),
            process=api_pb2.ProcessUsage(timestamp=now, process_count=_u64(raw.get("pids_current", 0))),
            containers=containers)
        if not src.host_network:
            interfaces = readers.interfaces_of(src.pause_pid)
            if interfaces:
                usages = [api_pb2.NetworkInterfaceUsage(
                    name=i.name, rx_bytes=_u64(i.rx_bytes), rx_errors=_u64(i.rx_errors),
                    tx_bytes=_u64(i.tx_bytes), tx_errors=_u64(i.tx_errors)) for i in interfaces]
                default = next((u for u in usages if u.name == "eth0"), usages[0])
                linux.network.CopyFrom(api_pb2.NetworkUsage(
                    timestamp=now, default_interface=default, interfaces=usages))
        return api_pb2.PodSandboxStats(
            attributes=api_pb2.PodSandboxAttributes(
                id=src.id,
                metadata=api_pb2.PodSandboxMetadata(name=src.name, uid=src.uid,
                                                    namespace=src.namespace, attempt=src.attempt),
                labels=src.labels, annotations=src.annotations),
            linux=linux)


def _sum(readings: list[dict[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in readings:
        for k, v in r.items():
            out[k] = out.get(k, 0) + v
    return out
