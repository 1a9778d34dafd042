"""Raw readings: cgroup counters, disk usage of a directory tree, interface counters."""
from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass

from runtime import cgroups


def cgroup_stats(path: str) -> dict[str, int]:
    """The cgroup's counters, or {} when it is gone (the container just exited)."""
    if not path:
        return {}
    try:
        return cgroups.read_stats(path)
    except (OSError, ValueError):
        return {}


@dataclass
class DiskUsage:
    bytes: int
    inodes: int


def disk_usage(root: str) -> DiskUsage:
    """Allocated bytes (st_blocks) and inodes under root, hard links counted once."""
    total = inodes = 0
    seen: set[tuple[int, int]] = set()
    stack = [root]
    while stack:
        path = stack.pop()
        try:
            with os.scandir(path) as it:
                for entry in it:
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    key = (st.st_dev, st.st_ino)
                    if key in seen:
                        continue
                    seen.add(key)
                    inodes += 1
                    total += st.st_blocks * 512
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
        except OSError:
            continue
    return DiskUsage(total, inodes)


class DiskUsageCache:
    """Walking a writable layer on every poll is too slow: keep each answer for a while."""

    def __init__(self, ttl: float = 10.0) -> None:
        self.ttl = ttl
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, DiskUsage]] = {}

    def get(self, root: str) -> DiskUsage:
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(root)
        if hit and now - hit[0] < self.ttl:
            return hit[1]
        usage = disk_usage(root)
        with self._lock:
            self._cache[root] = (now, usage)
        return usage

    def forget(self, root: str) -> None:
        with self._lock:
            self._cache.pop(root, None)


@dataclass
class InterfaceCounters:
    name: str
    rx_bytes: int
    rx_packets: int
    rx_errors: int
    rx_dropped: int
    tx_bytes: int
    tx_packets: int
    tx_errors: int
    tx_dropped: int


def parse_net_dev(text: str) -> list[InterfaceCounters]:
    out = []
    for line in text.splitlines()[2:]:
        name, _, rest = line.partition(":")
        f = [int(x) for x in rest.split()]
        if len(f) < 16:
            continue
        out.append(InterfaceCounters(name.strip(), f[0], f[1], f[2], f[3], f[8], f[9], f[10], f[11]))
    return out


def interfaces_of(pid: int) -> list[InterfaceCounters]:
    """Counters of the network namespace process pid lives in (loopback left out)."""
    if pid <= 0:
        return []
    try:
        with open(f"/proc/{pid}/net/dev") as f:
            text = f.read()
    except OSError:
        return []
    return [i for i in parse_net_dev(text) if i.name != "lo"]
