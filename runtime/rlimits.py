"""Resource limits and oom_score_adj for the container process.

This host (and many CI machines) lacks CAP_SYS_RESOURCE for the runtime: a hard limit above
the current one and an oom_score_adj below the current one cannot be set, so both are clamped
instead of failing the container.
"""
from __future__ import annotations

import resource
from collections.abc import Sequence

from runtime.container_spec import Rlimit

_NAMES: dict[str, int] = {
    name: getattr(resource, name)
    for name in ("RLIMIT_CPU", "RLIMIT_FSIZE", "RLIMIT_DATA", "RLIMIT_STACK", "RLIMIT_CORE",
                 "RLIMIT_RSS", "RLIMIT_NPROC", "RLIMIT_NOFILE", "RLIMIT_MEMLOCK", "RLIMIT_AS",
                 "RLIMIT_LOCKS", "RLIMIT_SIGPENDING", "RLIMIT_MSGQUEUE", "RLIMIT_NICE",
                 "RLIMIT_RTPRIO", "RLIMIT_RTTIME")
    if hasattr(resource, name)
}


def resource_number(name: str) -> int:
    """RLIMIT_* name -> the resource's number (a name the spec parser let through)."""
    return _NAMES[name]


def clamp_rlimit(soft: int, hard: int, cur_hard: int) -> tuple[int, int]:
    """(soft, hard) limited to the current hard limit (RLIM_INFINITY = -1 is unlimited)."""
    inf = resource.RLIM_INFINITY
    if cur_hard != inf and (hard == inf or hard > cur_hard):
        hard = cur_hard
    if hard != inf and (soft == inf or soft > hard):
        soft = hard
    return soft, hard


def apply_rlimits(rlimits: Sequence[Rlimit]) -> None:
    """setrlimit each entry, clamped to what this process may set."""
    for lim in rlimits:
        res = _NAMES[lim.type]
        _cur_soft, cur_hard = resource.getrlimit(res)
        soft, hard = clamp_rlimit(lim.soft, lim.hard, cur_hard)
        resource.setrlimit(res, (soft, hard))


def clamp_oom_score_adj(requested: int, current: int) -> int:
    """Without CAP_SYS_RESOURCE the value may only go up: lower requests become `current`."""
    return max(requested, current)


def apply_oom_score_adj(requested: int | None, proc: str = "/proc/self/oom_score_adj") -> int:
    """Write oom_score_adj (clamped); returns the value in effect."""
    with open(proc) as f:
        current = int(f.read().strip())
    if requested is None:
        return current
    value = requested
    if value < current:
        try:
            with open(proc, "w") as f:
                f.write(str(value))
            return value
        except PermissionError:
            value = clamp_oom_score_adj(requested, current)
    if value != current:
        with open(proc, "w") as f:
            f.write(str(value))
    return value
