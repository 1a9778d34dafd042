"""Test-only crash points: PYCRI_CRASH_AT=<name> makes the daemon die (SIGKILL) there.

Used by the failure-injection tests to prove that a daemon killed at any step
of an operation comes back consistent. Unset in production, it costs one dict
lookup.
"""
from __future__ import annotations

import os
import signal

_CRASH_AT = frozenset(filter(None, os.environ.get("PYCRI_CRASH_AT", "").split(",")))


def crash_point(name: str) -> None:
    if name in _CRASH_AT:
        os.kill(os.getpid(), signal.SIGKILL)
