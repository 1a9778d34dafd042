"""UpdateContainerResources semantics: merging an update into a container's resources (pure).

Both dicts use the ContainerSpec "resources" names (cri_server.resources.to_dict).
As in containerd, a field the update leaves at zero (or empty) keeps its current value;
`unified` keys are merged one by one, hugepage limits replace the limit of their page size,
and oom_score_adj (a property of the process, not of the cgroup) is never changed by an
update. A new memory limit without a swap limit sets the swap limit (memory + swap) to the
same value when there was no swap allowed before (unset, or equal to the old memory limit),
as containerd does: no swap.
"""
from __future__ import annotations

from typing import Any

_NUMBERS = ("cpu_period", "cpu_quota", "cpu_shares", "memory_limit_in_bytes",
            "memory_swap_limit_in_bytes")
_STRINGS = ("cpuset_cpus", "cpuset_mems")


def merge(current: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(current)
    for key in _NUMBERS:
        value = int(update.get(key) or 0)
        if value:
            out[key] = value
    old_mem = int(current.get("memory_limit_in_bytes") or 0)
    new_mem = int(update.get("memory_limit_in_bytes") or 0)
    old_swap = int(current.get("memory_swap_limit_in_bytes") or 0)
    if new_mem and not update.get("memory_swap_limit_in_bytes") and old_swap in (0, old_mem):
        out["memory_swap_limit_in_bytes"] = new_mem
    for key in _STRINGS:
        if update.get(key):
            out[key] = update[key]
    if update.get("hugepage_limits"):
        by_size = {h["page_size"]: h for h in current.get("hugepage_limits") or []}
        for h in update["hugepage_limits"]:
            by_size[h["page_size"]] = dict(h)
        out["hugepage_limits"] = list(by_size.values())
    if update.get("unified"):
        out["unified"] = {**(current.get("unified") or {}), **update["unified"]}
    return out


def changed_only(current: dict[str, Any], merged: dict[str, Any]) -> dict[str, Any]:
    """The part of merged that differs from current (what must be written to the cgroup)."""
    out: dict[str, Any] = {}
    for key, value in merged.items():
        if key == "oom_score_adj":
            continue
        if current.get(key) != value:
            out[key] = value
    # the memory writes are ordered against the swap limit: keep them together
    if "memory_limit_in_bytes" in out or "memory_swap_limit_in_bytes" in out:
        for key in ("memory_limit_in_bytes", "memory_swap_limit_in_bytes"):
            if merged.get(key):
                out[key] = merged[key]
    # quota and period are one setting (v2 cpu.max "quota period"): write both
    if "cpu_quota" in out or "cpu_period" in out:
        for key in ("cpu_quota", "cpu_period"):
            if merged.get(key):
                out[key] = merged[key]
    return out
