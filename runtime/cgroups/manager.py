"""Create, configure, join, read and remove one cgroup (v1/hybrid and v2).

`open_cgroup(path)` picks the right manager for the host. `path` is the cgroup's path relative
to the hierarchy root (e.g. /kubepods/besteffort/pod<uid>/<id>, see naming.py).
"""
from __future__ import annotations

import os
import threading
from collections.abc import Collection, Mapping
from typing import Any

from pycri_common.errors import FailedPrecondition, InvalidArgument
from runtime.cgroups import devices_bpf, fsutil, mode, resources

V2_CONTROLLERS = ("cpuset", "cpu", "io", "memory", "hugetlb", "pids")

# The parts of a stats reading (stat_files/parse_stats): "memory" (usage is always read),
# "cpu", "swap", "pids", "events" (OOM kills, limit hits). CRI's container stats need the
# first three, its pod stats pids too; read_stats() and the cAdvisor set all of them.
STAT_PARTS = frozenset({"memory", "cpu", "swap", "pids", "events"})
# What the "memory" part takes from memory.stat (v1: hierarchical total_* first).
_V1_MEMORY_KEYS = ("total_inactive_file", "inactive_file", "total_rss", "rss",
                   "total_pgfault", "pgfault", "total_pgmajfault", "pgmajfault")
_V2_MEMORY_KEYS = ("inactive_file", "anon", "pgfault", "pgmajfault")


class V1Cgroup:
    """A cgroup in every v1 hierarchy (plus the unified hierarchy in hybrid mode)."""

    version = 1

    def __init__(self, path: str, hierarchies: dict[str, str],
                 unified_root: str | None = None) -> None:
        self.path = "/" + path.strip("/")
        self.hierarchies = hierarchies
        self.unified_root = unified_root

    def dir(self, controller: str) -> str:
        return os.path.join(self.hierarchies[controller], self.path.lstrip("/"))

    def _dirs(self) -> list[str]:
        dirs = sorted({self.dir(c) for c in self.hierarchies})
        if self.unified_root:
            dirs.append(os.path.join(self.unified_root, self.path.lstrip("/")))
        return dirs

    def exists(self) -> bool:
        return "memory" in self.hierarchies and os.path.isdir(self.dir("memory"))

    def create(self, res: dict[str, Any] | None = None) -> None:
        for d in self._dirs():
            os.makedirs(d, exist_ok=True)
        if "cpuset" in self.hierarchies:
            self._init_cpuset()
        if res:
            self.apply_resources(res)

    def _init_cpuset(self) -> None:
        """New v1 cpuset groups start empty: copy cpus/mems down from the nearest parent."""
        root = self.hierarchies["cpuset"]
        cur = root
        for part in [p for p in self.path.split("/") if p]:
            parent, cur = cur, os.path.join(cur, part)
            for name in ("cpuset.cpus", "cpuset.mems"):
                if fsutil.read(os.path.join(cur, name)).strip() == "":
                    value = fsutil.read(os.path.join(parent, name)).strip()
                    fsutil.write(os.path.join(cur, name), value, f"cgroup {name}")

    def apply_resources(self, res: dict[str, Any]) -> None:
        for controller, name, value in resources.v1_writes(res):
            if controller not in self.hierarchies:
                if controller in ("hugetlb",):
                    continue  # optional controller not mounted here
                raise InvalidArgument(f"cgroup.resources: controller {controller} is not "
                                      "mounted on this host")
            target = os.path.join(self.dir(controller), name)
            if name == "memory.memsw.limit_in_bytes" and not os.path.exists(target):
                continue  # no swap accounting on this kernel
            if name.startswith("cpu.rt_") and not os.path.exists(target):
                raise FailedPrecondition(f"cgroup.resources: realtime CPU ({name}) needs a "
                                         "kernel with CONFIG_RT_GROUP_SCHED, which this host "
                                         "lacks")
            if name == "memory.limit_in_bytes":
                self._order_memory_writes(int(value), res)
            fsutil.write(target, value, f"cgroup.resources ({name})")

    def _order_memory_writes(self, memory: int, res: dict[str, Any]) -> None:
        """memory.limit must stay <= memsw.limit: raise memsw first when growing."""
        memsw = os.path.join(self.dir("memory"), "memory.memsw.limit_in_bytes")
        if not os.path.exists(memsw):
            return
        swap = int(res.get("memory_swap_limit_in_bytes") or 0)
        current = fsutil.read_int(memsw)
        if swap:
            if current < (memory if swap == -1 else swap):
                fsutil.write(memsw, str(swap),
                             "cgroup.resources (memory.memsw.limit_in_bytes)")
        elif current < memory:  # no swap asked: keep memsw == memory (no swap) while growing
            fsutil.write(memsw, str(memory), "cgroup.resources (memory.memsw.limit_in_bytes)")

    def set_device_rules(self, allow: list[str] | None) -> None:
        """devices cgroup: deny everything, then allow `allow` ("c 1:3 rwm"); None = allow all
        (privileged)."""
        if "devices" not in self.hierarchies:
            return
        d = self.dir("devices")
        if allow is None:
            fsutil.write(os.path.join(d, "devices.allow"), "a *:* rwm", "devices")
            return
        fsutil.write(os.path.join(d, "devices.deny"), "a *:* rwm", "devices")
        for rule in allow:
            fsutil.write(os.path.join(d, "devices.allow"), rule, f"devices rule {rule!r}")

    def attach(self, pid: int) -> None:
        for d in self._dirs():
            fsutil.write(os.path.join(d, "cgroup.procs"), str(pid), f"cgroup {self.path}")

    def join_self(self, unified_joined: bool = False) -> None:
        """Move the calling process in; it must be single-threaded (a forked child). Each v1
        hierarchy takes it through `tasks` with "0", the calling thread - all of a
        single-threaded process: the kernel moves the caller alone then, without the cgroup
        threadgroup lock, whose taking for writing (cgroup.procs, or any pid but 0) waits for
        an RCU grace period: 5-16 ms after an idle moment here, against 0.1-1 ms. The unified
        hierarchy (hybrid) has no such path, a thread moving only within a threaded domain:
        its cgroup.procs, unless the process was cloned into it (unified_joined,
        runtime.cgroups.clone_into)."""
        if threading.active_count() != 1:
            self.attach(os.getpid())
            return
        for d in sorted({self.dir(c) for c in self.hierarchies}):
            fsutil.write(os.path.join(d, "tasks"), "0", f"cgroup {self.path}")
        if self.unified_root and not unified_joined:
            fsutil.write(os.path.join(self.unified_root, self.path.lstrip("/"), "cgroup.procs"),
                         "0", f"cgroup {self.path}")

    def pids(self) -> list[int]:
        return fsutil.procs(self.dir("pids" if "pids" in self.hierarchies else "memory"))

    def stat_files(self, parts: Collection[str] = STAT_PARTS) -> dict[str, str]:
        """The files a stats reading of `parts` needs, by name; the memory usage file first
        (the anchor: the cgroup is gone when it cannot be read). Empty: no memory controller."""
        if "memory" not in self.hierarchies:
            return {}
        mem = self.dir("memory")
        files = {"usage": os.path.join(mem, "memory.usage_in_bytes")}
        if "memory" in parts:
            files["memory.stat"] = os.path.join(mem, "memory.stat")
        if "cpu" in parts and "cpuacct" in self.hierarchies:
            files["cpu"] = os.path.join(self.dir("cpuacct"), "cpuacct.usage")
        if "swap" in parts:
            files["memsw"] = os.path.join(mem, "memory.memsw.usage_in_bytes")
        if "pids" in parts and "pids" in self.hierarchies:
            files["pids"] = os.path.join(self.dir("pids"), "pids.current")
        if "events" in parts:
            files["oom_control"] = os.path.join(mem, "memory.oom_control")
            files["failcnt"] = os.path.join(mem, "memory.failcnt")
        return files

    def parse_stats(self, texts: Mapping[str, str | None],
                    parts: Collection[str] = STAT_PARTS) -> dict[str, int]:
        """The counters of `parts` from the texts of stat_files() (None: a file that could
        not be read); keys of parts not asked for are left out."""
        usage = fsutil.parse_int(texts.get("usage"))
        out = {"memory_usage_bytes": usage}
        if "memory" in parts:
            mstat = resources.pick_flat_keyed(texts.get("memory.stat") or "", _V1_MEMORY_KEYS)
            inactive = mstat.get("total_inactive_file", mstat.get("inactive_file", 0))
            out.update({
                "memory_working_set_bytes": max(0, usage - inactive),
                "memory_rss_bytes": mstat.get("total_rss", mstat.get("rss", 0)),
                "page_faults": mstat.get("total_pgfault", mstat.get("pgfault", 0)),
                "major_page_faults": mstat.get("total_pgmajfault", mstat.get("pgmajfault", 0)),
            })
        if "cpu" in parts:
            out["cpu_usage_ns"] = fsutil.parse_int(texts.get("cpu"))
        if "swap" in parts:
            out["swap_usage_bytes"] = max(0, fsutil.parse_int(texts.get("memsw"), usage) - usage)
        if "pids" in parts:
            out["pids_current"] = (fsutil.parse_int(texts.get("pids")) if "pids" in self.hierarchies
                                   else len(self.pids()))
        if "events" in parts:
            out["oom_kill_count"] = resources.parse_flat_keyed(
                texts.get("oom_control") or "").get("oom_kill", 0)
            out["memory_failcnt"] = fsutil.parse_int(texts.get("failcnt"))
        return out

    def stats(self, parts: Collection[str] = STAT_PARTS) -> dict[str, int]:
        return self.parse_stats(_read_files(self.stat_files(parts)), parts)

    def oom_kill_count(self) -> int:
        text = _read_or_empty(os.path.join(self.dir("memory"), "memory.oom_control"))
        return resources.parse_flat_keyed(text).get("oom_kill", 0)

    def remove(self, timeout: float = 2.0) -> None:
        for d in self._dirs():
            fsutil.remove_tree(d, timeout)


class V2Cgroup:
    """A cgroup in the unified hierarchy at `root`."""

    version = 2

    def __init__(self, path: str, root: str) -> None:
        self.path = "/" + path.strip("/")
        self.root = root
        self.dir = os.path.join(root, self.path.lstrip("/"))

    def exists(self) -> bool:
        return os.path.isdir(self.dir)

    def create(self, res: dict[str, Any] | None = None) -> None:
        cur = self.root
        for part in [p for p in self.path.split("/") if p]:
            self._enable_controllers(cur)
            cur = os.path.join(cur, part)
            os.makedirs(cur, exist_ok=True)
        if res:
            self.apply_resources(res)

    @staticmethod
    def _enable_controllers(directory: str) -> None:
        """Delegate the controllers we use to children of `directory`."""
        available = set(_read_or_empty(os.path.join(directory, "cgroup.controllers")).split())
        enabled = set(_read_or_empty(os.path.join(directory, "cgroup.subtree_control")).split())
        want = [c for c in V2_CONTROLLERS if c in available and c not in enabled]
        if want:
            fsutil.write(os.path.join(directory, "cgroup.subtree_control"),
                         " ".join("+" + c for c in want), "cgroup controllers")

    def apply_resources(self, res: dict[str, Any]) -> None:
        for name, value in resources.v2_writes(res):
            fsutil.write(os.path.join(self.dir, name), value, f"cgroup.resources ({name})")

    def set_device_rules(self, allow: list[str] | None) -> None:
        """cgroup v2 device control: an eBPF program with the allow-list (devices_bpf);
        None = allow all (privileged: nothing attached)."""
        if allow is not None:
            devices_bpf.attach_device_filter(self.dir, allow)

    def attach(self, pid: int) -> None:
        fsutil.write(os.path.join(self.dir, "cgroup.procs"), str(pid), f"cgroup {self.path}")

    def join_self(self, unified_joined: bool = False) -> None:
        """Move the calling process in (as V1Cgroup.join_self): nothing when it was cloned in
        (unified_joined), else its cgroup.procs - v2 has no move without the threadgroup lock."""
        if not unified_joined:
            self.attach(os.getpid())

    def pids(self) -> list[int]:
        return fsutil.procs(self.dir)

    def stat_files(self, parts: Collection[str] = STAT_PARTS) -> dict[str, str]:
        """As V1Cgroup.stat_files: memory.current first (the anchor)."""
        d = self.dir
        files = {"usage": os.path.join(d, "memory.current")}
        if "memory" in parts:
            files["memory.stat"] = os.path.join(d, "memory.stat")
        if "cpu" in parts:
            files["cpu.stat"] = os.path.join(d, "cpu.stat")
        if "swap" in parts:
            files["swap"] = os.path.join(d, "memory.swap.current")
        if "pids" in parts:
            files["pids"] = os.path.join(d, "pids.current")
        if "events" in parts:
            files["events"] = os.path.join(d, "memory.events")
        return files

    def parse_stats(self, texts: Mapping[str, str | None],
                    parts: Collection[str] = STAT_PARTS) -> dict[str, int]:
        usage = fsutil.parse_int(texts.get("usage"))
        out = {"memory_usage_bytes": usage}
        if "memory" in parts:
            mstat = resources.pick_flat_keyed(texts.get("memory.stat") or "", _V2_MEMORY_KEYS)
            out.update({
                "memory_working_set_bytes": max(0, usage - mstat.get("inactive_file", 0)),
                "memory_rss_bytes": mstat.get("anon", 0),
                "page_faults": mstat.get("pgfault", 0),
                "major_page_faults": mstat.get("pgmajfault", 0),
            })
        if "cpu" in parts:
            cpu = resources.parse_flat_keyed(texts.get("cpu.stat") or "")
            out["cpu_usage_ns"] = cpu.get("usage_usec", 0) * 1000
        if "swap" in parts:
            out["swap_usage_bytes"] = fsutil.parse_int(texts.get("swap"))
        if "pids" in parts:
            pids = texts.get("pids")
            out["pids_current"] = fsutil.parse_int(pids) if pids is not None else len(self.pids())
        if "events" in parts:
            events = resources.parse_flat_keyed(texts.get("events") or "")
            out["oom_kill_count"] = events.get("oom_kill", 0)
            out["memory_failcnt"] = events.get("max", 0)
        return out

    def stats(self, parts: Collection[str] = STAT_PARTS) -> dict[str, int]:
        return self.parse_stats(_read_files(self.stat_files(parts)), parts)

    def oom_kill_count(self) -> int:
        text = _read_or_empty(os.path.join(self.dir, "memory.events"))
        return resources.parse_flat_keyed(text).get("oom_kill", 0)

    def remove(self, timeout: float = 2.0) -> None:
        fsutil.remove_tree(self.dir, timeout)


Cgroup = V1Cgroup | V2Cgroup


def _read_files(files: Mapping[str, str]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name, path in files.items():
        try:
            out[name] = fsutil.read(path)
        except OSError:
            out[name] = None
    return out



def _read_or_empty(path: str) -> str:
    try:
        return fsutil.read(path)
    except OSError:
        return ""


def open_cgroup(path: str, root: str = mode.CGROUP_ROOT,
                mounts_text: str | None = None) -> Cgroup:
    """The manager for cgroup `path` on this host's layout (v2, or v1/hybrid)."""
    if not isinstance(path, str) or not path.startswith("/") or ".." in path.split("/"):
        raise InvalidArgument(f"cgroup path {path!r}: must be absolute without '..'")
    m = mode.detect_mode(root, mounts_text)
    if m == "v2":
        return V2Cgroup(path, os.path.normpath(root))
    return V1Cgroup(path, mode.v1_hierarchies(root, mounts_text),
                    mode.unified_root(root, mounts_text))
