"""A lock file that keeps garbage collection away from imports in other processes.

`pycri image import` runs next to the daemon on the same image root. It writes blobs and
snapshots before any image refers to them, so the daemon's garbage collection (and its
start-up clean-up of partial downloads) would see them as garbage. The importer holds a
shared flock on <root>/gc.lock for the whole import; collection takes the lock exclusively
and, without waiting, skips its round when it cannot (the next one catches up).
"""
from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class GcLock:
    def __init__(self, root: Path) -> None:
        self.path = root / "gc.lock"

    def _open(self) -> int:
        return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)

    @contextmanager
    def collecting(self) -> Iterator[bool]:
        """Exclusive, without waiting: yields False while an import holds the lock."""
        fd = self._open()
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)   # releases the lock

    @contextmanager
    def importing(self) -> Iterator[None]:
        """Shared, waiting for a collection round in progress to end."""
        fd = self._open()
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)
