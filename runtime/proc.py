"""Small reads of /proc and of pid files, shared by the keeper helpers, the shim's adoption
and the daemon's clean-up of dead shims. Stdlib only."""
from __future__ import annotations


def cmdline(pid: int) -> list[str]:
    """The argv of pid ([] when it is gone)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().decode(errors="replace").split("\0")
    except OSError:
        return []


def ended(pid: int) -> bool:
    """pid is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return True


def read_pid_file(path: str) -> int:
    """The pid in a pid file (decimal); 0 when it is missing or holds no number."""
    try:
        with open(path) as f:
            return int(f.read().strip() or 0)
    except (OSError, ValueError):
        return 0
