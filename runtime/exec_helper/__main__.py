"""python3 -m runtime.exec_helper: build the exec helper and its spawner (scripts/setup.sh) and
print the helper's path."""
from __future__ import annotations

import sys

from runtime.exec_helper import ExecHelperUnavailable, available, binary

if __name__ == "__main__":
    try:
        print(binary())
        available()   # and vspawn.c
    except ExecHelperUnavailable as e:
        print(f"pycri-exec: {e}", file=sys.stderr)
        sys.exit(1)
