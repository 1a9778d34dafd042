"""OOM-kill detection hook: the container cgroup's oom-kill count from
runtime.cgroups.oom_kill_count(spec["cgroup"]["path"]) (owner: init), read when
the container starts and when it exits by SIGKILL. Without a cgroup path an OOM
kill is reported as "Error" with exit code 137."""
from __future__ import annotations

import importlib
import signal
from typing import Any


def oom_kill_count(spec: dict[str, Any]) -> int | None:
    cgroup = spec.get("cgroup")
    path = cgroup.get("path") if isinstance(cgroup, dict) else None
    if not path:
        return None
    try:
        cgroups = importlib.import_module("runtime.cgroups")
    except ImportError:
        return None
    fn = getattr(cgroups, "oom_kill_count", None)
    if fn is None:
        return None
    try:
        return int(fn(path))
    except Exception:  # noqa: BLE001 - detection is best effort
        return None


def was_oom_killed(spec: dict[str, Any], count_at_start: int | None, exit_signal: int) -> bool:
    if exit_signal != signal.SIGKILL:
        return False
    now = oom_kill_count(spec)
    if now is None:
        return False
    return now > (count_at_start or 0)
