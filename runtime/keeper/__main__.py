"""python3 -m runtime.keeper: build the keeper (scripts/setup.sh) and print its path."""
from __future__ import annotations

import sys

from runtime.keeper import KeeperUnavailable, build

if __name__ == "__main__":
    try:
        print(build())
    except KeeperUnavailable as e:
        print(f"pycri-keeper: {e}", file=sys.stderr)
        sys.exit(1)
