"""Raw readings: cgroup counters, disk usage of a directory tree, interface counters."""
from __future__ import annotations

import os
import threading
import time
from collections.abc import Collection
from dataclasses import dataclass

from cri_server.stats.kept_files import KeptFiles
from pycri_common.errors import PycriError
from runtime import cgroups
from runtime.cgroups import fsutil

# open_cgroup() parses /proc/self/mounts (several times) to find the hierarchies; the layout
# does not change while the daemon runs, so each path's manager is made once and kept.
_CGROUP_CACHE_LIMIT = 4096
_cgroups: dict[str, cgroups.Cgroup] = {}
_cgroups_lock = threading.Lock()
_stat_files: dict[tuple[str, frozenset[str]], dict[str, str]] = {}  # same, per parts


def _open(path: str) -> cgroups.Cgroup:
    with _cgroups_lock:
        cg = _cgroups.get(path)
    if cg is None:
        cg = cgroups.open_cgroup(path)
        with _cgroups_lock:
            if len(_cgroups) >= _CGROUP_CACHE_LIMIT:
                _cgroups.clear()
            _cgroups[path] = cg
    return cg


def cgroup_stats(path: str, parts: Collection[str] = cgroups.STAT_PARTS,
                 files: KeptFiles | None = None) -> dict[str, int]:
    """The cgroup's counters of `parts` (runtime.cgroups STAT_PARTS), or {} when it does not
    exist (not made yet, or gone). With `files` the cgroup's files stay open between calls."""
    if not path:
        return {}
    try:
        cg = _open(path)
        if files is None:
            if not cg.exists():
                return {}
            return cg.stats(parts)
        key = (path, frozenset(parts))
        names = _stat_files.get(key)
        if names is None:
            names = cg.stat_files(parts)
            if len(_stat_files) >= _CGROUP_CACHE_LIMIT:
                _stat_files.clear()
            _stat_files[key] = names
        texts = files.read_group(path, names) if names else None
        return {} if texts is None else cg.parse_stats(texts, parts)
    except (OSError, ValueError, PycriError):
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
    """Walking a writable layer on every poll is too slow: keep each answer for a while.

    The first reading of a directory is taken at once. A reading older than `ttl` is
    still answered, and a background thread walks the tree again (stale-while-revalidate),
    so a poll never waits for a big writable layer to be walked. Directories nobody asked
    about for `forget_after` seconds are dropped. With background=False every stale
    reading is retaken in the caller (tests, tools).
    """

    def __init__(self, ttl: float = 10.0, background: bool = True,
                 forget_after: float = 600.0) -> None:
        self.ttl = ttl
        self.forget_after = forget_after
        self._background = background
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, DiskUsage]] = {}
        self._asked: dict[str, float] = {}
        self._pending: list[str] = []
        self._wake = threading.Condition(self._lock)
        self._worker: threading.Thread | None = None
        self._last_prune = time.monotonic()

    def get(self, root: str) -> DiskUsage:
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(root)
            self._asked[root] = now
            if hit is not None and now - hit[0] >= self.ttl and self._background:
                self._schedule(root)
            if now - self._last_prune > self.forget_after / 10:
                self._prune(now)
        if hit is not None and (now - hit[0] < self.ttl or self._background):
            return hit[1]
        return self._measure(root)

    def _measure(self, root: str) -> DiskUsage:
        taken = time.monotonic()
        usage = disk_usage(root)
        with self._lock:
            self._cache[root] = (taken, usage)
        return usage

    def _schedule(self, root: str) -> None:
        """Queues root for the background walker (lock held)."""
        if root in self._pending:
            return
        self._pending.append(root)
        if self._worker is None or not self._worker.is_alive():
            self._worker = threading.Thread(target=self._work, name="disk-usage", daemon=True)
            self._worker.start()
        self._wake.notify()

    def _work(self) -> None:
        while True:
            with self._lock:
                if not self._pending:
                    self._wake.wait(60)
                    if not self._pending:
                        self._worker = None
                        return
                root = self._pending[0]
            try:
                self._measure(root)
            finally:
                with self._lock:
                    self._pending.remove(root)

    def _prune(self, now: float) -> None:
        """Drops directories not asked about for forget_after seconds (lock held)."""
        self._last_prune = now
        for root, asked in list(self._asked.items()):
            if now - asked > self.forget_after:
                self._asked.pop(root, None)
                self._cache.pop(root, None)

    def forget(self, root: str) -> None:
        with self._lock:
            self._cache.pop(root, None)
            self._asked.pop(root, None)


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
        f = rest.split()
        if len(f) < 16:
            continue
        try:  # only the eight counters kept (the stats Lists parse this for every pod)
            out.append(InterfaceCounters(name.strip(), int(f[0]), int(f[1]), int(f[2]),
                                         int(f[3]), int(f[8]), int(f[9]), int(f[10]),
                                         int(f[11])))
        except ValueError:
            continue
    return out


def interfaces_of(pid: int, files: KeptFiles | None = None, key: str = ""
                  ) -> list[InterfaceCounters]:
    """Counters of the network namespace process pid lives in (loopback left out). With
    `files` the file stays open under `key` between calls (half the cost of an open, a
    read and a close); the open file holds the namespace, so its holder must forget `key`
    once the pod is gone (StatsService.list_pod_stats)."""
    if pid <= 0:
        return []
    path = f"/proc/{pid}/net/dev"
    try:
        if files is not None:
            texts = files.read_group(key, {"net": path})
            text = texts["net"] if texts is not None else None
            if text is None:
                return []
        else:
            text = fsutil.read(path)   # a raw read: kubelet polls this
    except (OSError, UnicodeDecodeError):
        return []
    return [i for i in parse_net_dev(text) if i.name != "lo"]
