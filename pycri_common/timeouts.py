"""One factor for pycri's internal waits (zygote and shim start-up and calls, the pause-holder).

A host whose CPU is emulated, like the VM leg's guest (scripts/vm.sh: QEMU without KVM, 30-60x
slower), sets PYCRI_TIMEOUT_SCALE so those waits stretch with it; unset, it is 1.
"""
from __future__ import annotations

import os


def _scale() -> float:
    try:
        value = float(os.environ.get("PYCRI_TIMEOUT_SCALE") or 1)
    except ValueError:
        return 1.0
    return value if value >= 1 else 1.0


SCALE = _scale()


def scaled(seconds: float) -> float:
    return seconds * SCALE
