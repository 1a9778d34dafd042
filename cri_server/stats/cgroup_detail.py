"""cgroup readings beyond runtime.cgroups.read_stats, for the cAdvisor metric set.

CPU user/system split and CFS throttling, memory cache/mapped/kernel/peak, the
configured limits (the container_spec_* metrics), and process, thread, fd and
socket counts of the processes in the cgroup. v1 and v2 files are read into
the same keys; a file that does not exist reads as absent, not as an error.
"""
from __future__ import annotations

import os
from typing import Any

from runtime import cgroups
from runtime.cgroups.resources import parse_flat_keyed

USER_HZ = os.sysconf("SC_CLK_TCK")
UNLIMITED = 0  # cAdvisor reports "no limit" as 0 for spec metrics


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def _int(path: str) -> int | None:
    text = _read(path).strip()
    if not text or text == "max":
        return None
    try:
        return int(text)
    except ValueError:
        return None


def _v1(cg: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    h = cg.hierarchies
    if "cpuacct" in h:
        acct = parse_flat_keyed(_read(os.path.join(cg.dir("cpuacct"), "cpuacct.stat")))
        out["cpu_user_ns"] = acct.get("user", 0) * 1_000_000_000 // USER_HZ
        out["cpu_system_ns"] = acct.get("system", 0) * 1_000_000_000 // USER_HZ
    if "cpu" in h:
        cpu_dir = cg.dir("cpu")
        stat = parse_flat_keyed(_read(os.path.join(cpu_dir, "cpu.stat")))
        out["cfs_periods"] = stat.get("nr_periods", 0)
        out["cfs_throttled_periods"] = stat.get("nr_throttled", 0)
        out["cfs_throttled_ns"] = stat.get("throttled_time", 0)
        out["spec_cpu_period"] = _int(os.path.join(cpu_dir, "cpu.cfs_period_us")) or 0
        quota = _int(os.path.join(cpu_dir, "cpu.cfs_quota_us"))
        out["spec_cpu_quota"] = quota if quota and quota > 0 else 0
        out["spec_cpu_shares"] = _int(os.path.join(cpu_dir, "cpu.shares")) or 0
    if "memory" in h:
        mem = cg.dir("memory")
        stat = parse_flat_keyed(_read(os.path.join(mem, "memory.stat")))
        out["memory_cache"] = stat.get("total_cache", stat.get("cache", 0))
        out["memory_mapped_file"] = stat.get("total_mapped_file", stat.get("mapped_file", 0))
        out["memory_kernel"] = _int(os.path.join(mem, "memory.kmem.usage_in_bytes")) or 0
        out["memory_max_usage"] = _int(os.path.join(mem, "memory.max_usage_in_bytes")) or 0
        out["spec_memory_limit"] = _limit(_int(os.path.join(mem, "memory.limit_in_bytes")))
        out["spec_memory_swap_limit"] = _limit(
            _int(os.path.join(mem, "memory.memsw.limit_in_bytes")))
    if "pids" in h:
        out["threads_max"] = _int(os.path.join(cg.dir("pids"), "pids.max")) or 0
    return out


def _limit(value: int | None) -> int:
    # v1 says "no limit" with a huge page-aligned number.
    if value is None or value >= 1 << 62:
        return UNLIMITED
    return value


def _v2(cg: Any) -> dict[str, int]:
    d = cg.dir
    cpu = parse_flat_keyed(_read(os.path.join(d, "cpu.stat")))
    mem = parse_flat_keyed(_read(os.path.join(d, "memory.stat")))
    out = {
        "cpu_user_ns": cpu.get("user_usec", 0) * 1000,
        "cpu_system_ns": cpu.get("system_usec", 0) * 1000,
        "cfs_periods": cpu.get("nr_periods", 0),
        "cfs_throttled_periods": cpu.get("nr_throttled", 0),
        "cfs_throttled_ns": cpu.get("throttled_usec", 0) * 1000,
        "memory_cache": mem.get("file", 0),
        "memory_mapped_file": mem.get("file_mapped", 0),
        "memory_kernel": mem.get("kernel", mem.get("kernel_stack", 0) + mem.get("slab", 0)),
        "memory_max_usage": _int(os.path.join(d, "memory.peak")) or 0,
        "spec_memory_limit": _int(os.path.join(d, "memory.max")) or UNLIMITED,
        "spec_memory_swap_limit": _int(os.path.join(d, "memory.swap.max")) or UNLIMITED,
        "threads_max": _int(os.path.join(d, "pids.max")) or 0,
    }
    quota_period = _read(os.path.join(d, "cpu.max")).split()
    if len(quota_period) == 2:
        out["spec_cpu_period"] = int(quota_period[1])
        out["spec_cpu_quota"] = 0 if quota_period[0] == "max" else int(quota_period[0])
    weight = _int(os.path.join(d, "cpu.weight"))
    if weight:
        # The inverse of the shares -> weight conversion runc and the kubelet use.
        out["spec_cpu_shares"] = 2 + ((weight - 1) * 262142) // 9999
    return out


def _processes(pids: list[int]) -> dict[str, int]:
    threads = fds = sockets = 0
    for pid in pids:
        for line in _read(f"/proc/{pid}/status").splitlines():
            if line.startswith("Threads:"):
                threads += int(line.split()[1])
                break
        try:
            entries = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        fds += len(entries)
        for fd in entries:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:"):
                    sockets += 1
            except OSError:
                continue
    return {"threads": threads, "file_descriptors": fds, "sockets": sockets}


def read_detail(path: str) -> dict[str, int]:
    """Extra counters of cgroup `path`; {} when the cgroup is gone."""
    if not path:
        return {}
    try:
        cg = cgroups.open_cgroup(path)
        if not cg.exists():
            return {}
        out = _v2(cg) if cg.version == 2 else _v1(cg)
        out.update(_processes(cg.pids()))
        return out
    except (OSError, ValueError):
        return {}
