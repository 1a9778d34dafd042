"""Container cgroup hooks of the shim (runtime.cgroups; the container init creates the cgroup).

- OOM-kill detection: runtime.cgroups.oom_kill_count(spec.cgroup.path) is read when
  the container starts and when it exits by SIGKILL; a higher count means "OOMKilled".
  Without a cgroup path an OOM kill is reported as "Error" with exit code 137.
- remove_container_cgroup(): the container's cgroup is removed once it exited (after the
  OOM check), as runc delete does in containerd."""
from __future__ import annotations

import importlib
import signal

from runtime.container_spec import ContainerSpec


def _cgroup_path(spec: ContainerSpec) -> str | None:
    return spec.cgroup.path if spec.cgroup is not None else None


def _oom_count_path(spec: ContainerSpec) -> str | None:
    """systemd driver: systemd removes a scope's cgroup as soon as it is empty, which can be
    before the shim reads it after the exit, so the count is the pod slice's (cgroup v2's
    memory.events is hierarchical): a SIGKILLed container whose pod saw an OOM kill meanwhile."""
    path = _cgroup_path(spec)
    if path and spec.cgroup is not None and spec.cgroup.driver == "systemd":
        return path.rsplit("/", 1)[0] or "/"
    return path


def oom_kill_count(spec: ContainerSpec) -> int | None:
    path = _oom_count_path(spec)
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


def remove_container_cgroup(spec: ContainerSpec) -> str | None:
    """Remove the container's cgroup after it exited, as runc delete does (the init creates
    it; contract 5 of docs/architecture.md). Returns an error message, or None."""
    path = _cgroup_path(spec)
    if not path or (spec.cgroup is not None and spec.cgroup.driver == "systemd"):
        return None  # systemd removes an empty scope's cgroup; the daemon stops the unit
    try:
        cgroups = importlib.import_module("runtime.cgroups")
        cgroups.remove_cgroup(path, timeout=1.0)
    except Exception as e:  # noqa: BLE001 - reported by the caller, never fatal
        return f"removing cgroup {path}: {e}"
    return None


def was_oom_killed(spec: ContainerSpec, count_at_start: int | None, exit_signal: int) -> bool:
    if exit_signal != signal.SIGKILL:
        return False
    now = oom_kill_count(spec)
    if now is None:
        return False
    return now > (count_at_start or 0)
