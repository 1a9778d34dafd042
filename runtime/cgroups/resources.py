"""ContainerSpec cgroup resources -> the cgroup files to write (pure, no I/O).

Zero or missing values mean "not set", as kubelet sends them. v1 writes are
(controller, file, value); v2 writes are (file, value). Order matters and is kept: cpu period
before quota, v2 `unified` keys last (they override).
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pycri_common.errors import InvalidArgument


def _get(res: dict[str, Any], key: str) -> int:
    return int(res.get(key) or 0)


def shares_to_weight(shares: int) -> int:
    """cgroup v1 cpu.shares [2, 262144] -> v2 cpu.weight [1, 10000] (runc's formula)."""
    if shares <= 0:
        return 0
    shares = max(2, min(shares, 262144))
    return 1 + ((shares - 2) * 9999) // 262142


def swap_to_v2(memory: int, swap_total: int) -> str | None:
    """CRI/v1 memory+swap total -> v2 memory.swap.max (swap alone); None = leave unset."""
    if swap_total == 0:
        return None
    if swap_total == -1:
        return "max"
    if memory <= 0:
        raise InvalidArgument("cgroup.resources.memory_swap_limit_in_bytes: set without a "
                              "memory limit")
    if swap_total < memory:
        raise InvalidArgument(f"cgroup.resources.memory_swap_limit_in_bytes ({swap_total}) must "
                              f"be >= memory_limit_in_bytes ({memory})")
    return str(swap_total - memory)


def v1_writes(res: dict[str, Any]) -> list[tuple[str, str, str]]:
    if res.get("unified"):
        raise InvalidArgument("cgroup.resources.unified: needs cgroup v2 (this host runs v1)")
    out: list[tuple[str, str, str]] = []
    shares = _get(res, "cpu_shares")
    if shares:
        out.append(("cpu", "cpu.shares", str(shares)))
    period = _get(res, "cpu_period")
    if period:
        out.append(("cpu", "cpu.cfs_period_us", str(period)))
    quota = _get(res, "cpu_quota")
    if quota:
        out.append(("cpu", "cpu.cfs_quota_us", str(quota)))
    rt_period, rt_runtime = res.get("cpu_realtime_period"), res.get("cpu_realtime_runtime")
    if rt_period:  # the period first: the runtime must fit in it (runc's order)
        out.append(("cpu", "cpu.rt_period_us", str(rt_period)))
    if rt_runtime is not None:
        out.append(("cpu", "cpu.rt_runtime_us", str(rt_runtime)))
    if res.get("cpuset_cpus"):
        out.append(("cpuset", "cpuset.cpus", str(res["cpuset_cpus"])))
    if res.get("cpuset_mems"):
        out.append(("cpuset", "cpuset.mems", str(res["cpuset_mems"])))
    mem = _get(res, "memory_limit_in_bytes")
    if mem:
        out.append(("memory", "memory.limit_in_bytes", str(mem)))
    swap = _get(res, "memory_swap_limit_in_bytes")
    if swap:
        if swap != -1 and mem > 0 and swap < mem:
            raise InvalidArgument(f"cgroup.resources.memory_swap_limit_in_bytes ({swap}) must "
                                  f"be >= memory_limit_in_bytes ({mem})")
        out.append(("memory", "memory.memsw.limit_in_bytes", str(swap)))
    reservation = _get(res, "memory_reservation_in_bytes")
    if reservation:
        out.append(("memory", "memory.soft_limit_in_bytes", str(reservation)))
    swappiness = res.get("memory_swappiness")
    if swappiness is not None:
        if not 0 <= int(swappiness) <= 100:
            raise InvalidArgument(f"cgroup.resources.memory_swappiness: {swappiness} is not "
                                  "in [0, 100]")
        out.append(("memory", "memory.swappiness", str(swappiness)))
    pids = _get(res, "pids_limit")
    if pids:
        out.append(("pids", "pids.max", "max" if pids < 0 else str(pids)))
    for h in res.get("hugepage_limits") or []:
        out.append(("hugetlb", f"hugetlb.{h['page_size']}.limit_in_bytes", str(h["limit"])))
    return out


def v2_writes(res: dict[str, Any]) -> list[tuple[str, str]]:
    for key, why in (("memory_swappiness", "cgroup v2 has no per-cgroup swappiness"),
                     ("cpu_realtime_runtime", "cgroup v2 has no realtime CPU budget"),
                     ("cpu_realtime_period", "cgroup v2 has no realtime CPU budget")):
        if res.get(key) is not None:
            raise InvalidArgument(f"cgroup.resources.{key}: not applicable on this host's "
                                  f"cgroup v2 ({why})")
    out: list[tuple[str, str]] = []
    weight = shares_to_weight(_get(res, "cpu_shares"))
    if weight:
        out.append(("cpu.weight", str(weight)))
    quota, period = _get(res, "cpu_quota"), _get(res, "cpu_period")
    if quota or period:
        out.append(("cpu.max", f"{quota if quota > 0 else 'max'} {period or 100000}"))
    if res.get("cpuset_cpus"):
        out.append(("cpuset.cpus", str(res["cpuset_cpus"])))
    if res.get("cpuset_mems"):
        out.append(("cpuset.mems", str(res["cpuset_mems"])))
    mem = _get(res, "memory_limit_in_bytes")
    if mem:
        out.append(("memory.max", "max" if mem < 0 else str(mem)))
    reservation = _get(res, "memory_reservation_in_bytes")
    if reservation:
        out.append(("memory.low", str(reservation)))
    swap = swap_to_v2(mem, _get(res, "memory_swap_limit_in_bytes"))
    if swap is not None:
        out.append(("memory.swap.max", swap))
    pids = _get(res, "pids_limit")
    if pids:
        out.append(("pids.max", "max" if pids < 0 else str(pids)))
    for h in res.get("hugepage_limits") or []:
        out.append((f"hugetlb.{h['page_size']}.max", str(h["limit"])))
    for key, value in (res.get("unified") or {}).items():
        if "/" in key or key in (".", ".."):
            raise InvalidArgument(f"cgroup.resources.unified: bad key {key!r}")
        out.append((key, str(value)))
    return out


def pick_flat_keyed(text: str, keys: Iterable[str]) -> dict[str, int]:
    """parse_flat_keyed(text) limited to `keys`, for long files of which a few keys are
    needed (the stats Lists read memory.stat, ~40 lines on v1, for every container on
    every poll: a find per key is about twice as fast as splitting every line)."""
    padded = "\n" + text
    out: dict[str, int] = {}
    for key in keys:
        at = padded.find("\n" + key + " ")
        if at < 0:
            continue
        start = at + len(key) + 2
        end = padded.find("\n", start)
        try:
            out[key] = int(padded[start:end] if end >= 0 else padded[start:])
        except ValueError:
            continue
    return out


def parse_flat_keyed(text: str) -> dict[str, int]:
    """'key value' lines (memory.stat, cpu.stat, memory.events, memory.oom_control)."""
    # The kernel's own layout, one pair a line, first (the stats Lists parse memory.stat of
    # every container on every poll); anything else line by line, skipping what is not a pair.
    fast: dict[str, int] = {}
    try:
        for line in text.splitlines():
            key, value = line.split()
            fast[key] = int(value)
        return fast
    except ValueError:
        pass
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                out[parts[0]] = int(parts[1])
            except ValueError:
                continue
    return out
