"""python3 -m runtime.exec_helper: build the exec helper (scripts/setup.sh) and print its path."""
from __future__ import annotations

import sys

from runtime.exec_helper import ExecHelperUnavailable, binary

if __name__ == "__main__":
    try:
        print(binary())
    except ExecHelperUnavailable as e:
        print(f"pycri-exec: {e}", file=sys.stderr)
        sys.exit(1)
