"""CRI ContainerStats / PodSandboxStats from cgroup counters and friends.

usage_nano_cores needs two samples: the collector remembers the last CPU
reading of every container and pod and derives the rate from the previous one
(kubelet's own summary API does the same with cAdvisor data).
"""
from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Collection

from google.protobuf.message import Message

from cri_server.stats import readers
from cri_server.stats.kept_files import KeptFiles
from cri_server.stats.sources import ContainerSource, PodSource
from proto import api_pb2

# A CPU sample older than this is dropped (and the next reading has no nano cores again).
SAMPLE_FORGET_NS = 600 * 1_000_000_000
# What each message has figures for (runtime.cgroups STAT_PARTS): ContainerStats has cpu,
# memory and swap; the pod's own figures are cpu, memory and its process count.
CONTAINER_PARTS = frozenset({"memory", "cpu", "swap"})
POD_PARTS = frozenset({"memory", "cpu", "pids"})
NET_PREFIX = "net:"   # KeptFiles keys of the pods' net/dev files (cgroup files: their paths)


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
        self.files = KeptFiles()   # the cgroup files of every container and pod polled
        self._fs_mountpoint = _mountpoint(containers_root) if os.path.exists(containers_root) else "/"
        self._lock = threading.Lock()
        self._last_cpu: dict[str, tuple[int, int]] = {}  # id -> (timestamp ns, usage ns)
        self._attrs: dict[str, bytes] = {}  # id -> serialized attributes (_attributes)
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
                self._attrs.pop(key, None)

    def forget(self, key: str) -> None:
        with self._lock:
            self._last_cpu.pop(key, None)
            self._attrs.pop(key, None)

    def _read(self, cgroup_path: str, parts: frozenset[str]) -> dict[str, int]:
        return readers.cgroup_stats(cgroup_path, parts, self.files)

    def _attributes(self, key: str, build: Callable[[], Message]) -> bytes:
        """The serialized attributes (field 1 of ContainerStats and PodSandboxStats) of a
        container or pod: id, metadata, labels and annotations never change once it exists,
        so each is built once and merged into every later message as bytes."""
        with self._lock:
            cached = self._attrs.get(key)
        if cached is None:
            cached = build().SerializeToString()
            with self._lock:
                self._attrs[key] = cached
        return cached

    def _fill_cpu(self, cpu: api_pb2.CpuUsage, key: str, now: int, raw: dict[str, int]) -> None:
        usage = max(0, raw.get("cpu_usage_ns", 0))
        cpu.timestamp = now
        cpu.usage_core_nano_seconds.value = usage
        rate = self._nano_cores(key, now, usage)
        if rate is not None:
            cpu.usage_nano_cores.value = max(0, rate)

    @staticmethod
    def _fill_memory(mem: api_pb2.MemoryUsage, now: int, raw: dict[str, int],
                     limit: int = 0) -> None:
        working_set = max(0, raw.get("memory_working_set_bytes", 0))
        mem.timestamp = now
        mem.working_set_bytes.value = working_set
        mem.usage_bytes.value = max(0, raw.get("memory_usage_bytes", 0))
        mem.rss_bytes.value = max(0, raw.get("memory_rss_bytes", 0))
        mem.page_faults.value = max(0, raw.get("page_faults", 0))
        mem.major_page_faults.value = max(0, raw.get("major_page_faults", 0))
        if limit > 0:  # as containerd: what is left below the limit
            mem.available_bytes.value = max(0, limit - working_set)

    # -- containers ----------------------------------------------------------
    def container_stats(self, src: ContainerSource) -> api_pb2.ContainerStats:
        out = api_pb2.ContainerStats()
        self.fill_container(out, src)
        return out

    def fill_container(self, out: api_pb2.ContainerStats, src: ContainerSource) -> None:
        """container_stats into an empty message (a List's item: no copy into the answer)."""
        now = time.time_ns()
        raw = self._read(src.cgroup_path, CONTAINER_PARTS)
        usage = self.disk.get(src.upper_dir) if src.upper_dir else readers.DiskUsage(0, 0)
        out.MergeFromString(self._attributes(src.id, lambda: api_pb2.ContainerStats(
            attributes=api_pb2.ContainerAttributes(
                id=src.id, metadata=api_pb2.ContainerMetadata(name=src.name, attempt=src.attempt),
                labels=src.labels, annotations=src.annotations))))
        self._fill_cpu(out.cpu, src.id, now, raw)
        self._fill_memory(out.memory, now, raw, src.memory_limit)
        out.swap.timestamp = now
        out.swap.swap_usage_bytes.value = max(0, raw.get("swap_usage_bytes", 0))
        layer = out.writable_layer
        layer.timestamp = now
        layer.fs_id.mountpoint = self._fs_mountpoint
        layer.used_bytes.value = max(0, usage.bytes)
        layer.inodes_used.value = max(0, usage.inodes)

    # -- pods ----------------------------------------------------------------
    def pod_stats(self, src: PodSource) -> api_pb2.PodSandboxStats:
        out = api_pb2.PodSandboxStats()
        self.fill_pod(out, src)
        return out

    @staticmethod
    def net_key(src: PodSource) -> str:
        return f"{NET_PREFIX}{src.id}:{src.pause_pid}"

    def forget_net_except(self, keep: Collection[str]) -> None:
        """Closes the kept net/dev file of every pod whose net_key is not in keep (each holds
        its pod's network namespace: a pod that is no longer listed must not pin it)."""
        self.files.forget_prefixed(NET_PREFIX, set(keep))

    def fill_pod(self, out: api_pb2.PodSandboxStats, src: PodSource,
                 keep_net: bool = False) -> None:
        """pod_stats into an empty message (a List's item: no copy into the answer).
        keep_net: the pod's net/dev file stays open (forget_net_except closes it)."""
        now = time.time_ns()
        raw = self._read(src.cgroup_path, POD_PARTS)
        out.MergeFromString(self._attributes("pod:" + src.id, lambda: api_pb2.PodSandboxStats(
            attributes=api_pb2.PodSandboxAttributes(
                id=src.id,
                metadata=api_pb2.PodSandboxMetadata(name=src.name, uid=src.uid,
                                                    namespace=src.namespace, attempt=src.attempt),
                labels=src.labels, annotations=src.annotations))))
        linux = out.linux
        for c in src.containers:
            self.fill_container(linux.containers.add(), c)
        if not raw and src.containers:  # no pod cgroup of ours: add the containers up
            raw = _sum([self._read(c.cgroup_path, POD_PARTS) for c in src.containers])
        self._fill_cpu(linux.cpu, "pod:" + src.id, now, raw)
        self._fill_memory(linux.memory, now, raw)
        linux.process.timestamp = now
        linux.process.process_count.value = max(0, raw.get("pids_current", 0))
        if not src.host_network:
            interfaces = (readers.interfaces_of(src.pause_pid, self.files, self.net_key(src))
                          if keep_net else readers.interfaces_of(src.pause_pid))
            if interfaces:
                net = linux.network
                net.timestamp = now
                for i in interfaces:
                    usage = net.interfaces.add()
                    usage.name = i.name
                    usage.rx_bytes.value = max(0, i.rx_bytes)
                    usage.rx_errors.value = max(0, i.rx_errors)
                    usage.tx_bytes.value = max(0, i.tx_bytes)
                    usage.tx_errors.value = max(0, i.tx_errors)
                net.default_interface.CopyFrom(
                    next((u for u in net.interfaces if u.name == "eth0"), net.interfaces[0]))


def _sum(readings: list[dict[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in readings:
        for k, v in r.items():
            out[k] = out.get(k, 0) + v
    return out
