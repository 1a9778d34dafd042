"""What execve(2) accepts, checked before a command line is sent anywhere.

Linux copies argv and envp onto the new process's stack: each string (its NUL included) may be
at most MAX_ARG_STRLEN bytes, and all of them together, with one pointer each, at most a quarter
of the stack limit, never more than 6 MiB (3/4 of _STK_LIM) and never less than 128 KiB. That
total is what sysconf(_SC_ARG_MAX) reports; `check_exec_size` refuses a command line over either
limit with InvalidArgument, so it fails at once with a reason instead of at execve (E2BIG) or
on its way to the shim. The executable's own path and a HOME the init may add are not counted.
"""
from __future__ import annotations

import os
from collections.abc import Sequence

from pycri_common.errors import InvalidArgument

#: Longest single argument or environment string, its terminating NUL included (linux/binfmts.h).
MAX_ARG_STRLEN = 131072
#: The most the kernel ever allows for argv + envp, whatever the stack limit (_STK_LIM / 4 * 3).
ARG_MAX_CAP = 6 << 20
#: The least it allows (the historic ARG_MAX).
ARG_MAX_FLOOR = 131072
_POINTER = 8


def arg_max() -> int:
    """Bytes argv + envp may take here (sysconf(_SC_ARG_MAX), within the kernel's bounds)."""
    try:
        n = os.sysconf("SC_ARG_MAX")
    except (ValueError, OSError):
        n = -1
    return min(max(n, ARG_MAX_FLOOR), ARG_MAX_CAP)


def _size(s: str) -> int:
    return len(s.encode("utf-8", "surrogatepass")) + 1


def check_exec_size(argv: Sequence[str], env: Sequence[str], what: str) -> None:
    """InvalidArgument when execve(2) would refuse `argv` with `env` (E2BIG)."""
    total = 0
    for kind, items in (("argument", argv), ("environment entry", env)):
        for i, s in enumerate(items):
            n = _size(s)
            if n > MAX_ARG_STRLEN:
                name = f" {s.partition('=')[0][:40]!r}" if kind != "argument" else f" {i}"
                raise InvalidArgument(
                    f"{what}: {kind}{name} is {n - 1} bytes; execve(2) takes at most "
                    f"{MAX_ARG_STRLEN - 1} bytes per argument or environment entry")
            total += n + _POINTER
    limit = arg_max()
    if total > limit:
        raise InvalidArgument(
            f"{what}: the arguments and environment take {total} bytes; execve(2) accepts at "
            f"most {limit} here (ARG_MAX)")
