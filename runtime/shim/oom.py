"""OOM-kill detection hook: asks runtime.cgroups (owner: init) for the
container cgroup's oom-kill count when that module offers
`oom_kill_count(cgroup: dict) -> int`. Without it, OOM kills are reported as
"Error" with exit code 137."""
from __future__ import annotations

import importlib
import signal
from typing import Any


def oom_kill_count(spec: dict[str, Any]) -> int | None:
    cgroup = spec.get("cgroup")
    if not cgroup:
        return None
    try:
        cgroups = importlib.import_module("runtime.cgroups")
    except ImportError:
        return None
    fn = getattr(cgroups, "oom_kill_count", None)
    if fn is None:
        return None
    try:
        return int(fn(cgroup))
    except Exception:  # noqa: BLE001 - detection is best effort
        return None


def was_oom_killed(spec: dict[str, Any], count_at_start: int | None, exit_signal: int) -> bool:
    if exit_signal != signal.SIGKILL:
        return False
    now = oom_kill_count(spec)
    if now is None:
        return False
    return now > (count_at_start or 0)
