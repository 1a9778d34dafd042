"""StatusWatch: which containers' status files were written, from inotify, so that a List
stats only those (plus any it has not read yet) instead of every container's file.

One inotify instance watches each pod's <shim_dir>/containers directory (the shim writes a
status file as temp + rename, so a write is an IN_MOVED_TO of <id>.json there). `drain()`
reads what happened since the last call (one non-blocking read) and returns the container
ids whose files changed; an overflowed queue or a watch that went answers None for
"assume every file changed". Without inotify every call answers None.
"""
from __future__ import annotations

import ctypes
import errno
import os
import struct
import threading

_IN_MODIFY = 0x2
_IN_CLOSE_WRITE = 0x8
_IN_MOVED_TO = 0x80
_IN_CREATE = 0x100
_IN_DELETE = 0x200
_IN_Q_OVERFLOW = 0x4000
_IN_IGNORED = 0x8000
_IN_ONLYDIR = 0x01000000
_MASK = _IN_MODIFY | _IN_CLOSE_WRITE | _IN_MOVED_TO | _IN_CREATE | _IN_DELETE | _IN_ONLYDIR
_HEADER = struct.Struct("iIII")   # wd, mask, cookie, len (struct inotify_event)
_SUFFIX = ".json"


class StatusWatch:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wds: dict[str, int] = {}    # watched directory -> watch descriptor
        self._dirs: dict[int, str] = {}
        self._fd = -1
        try:
            self._libc = ctypes.CDLL(None, use_errno=True)
            self._fd = int(self._libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC))
        except (OSError, AttributeError):
            self._fd = -1

    @property
    def enabled(self) -> bool:
        return self._fd >= 0

    def watch(self, directory: str) -> bool:
        """Watches directory (idempotent); False if it cannot be watched."""
        if self._fd < 0:
            return False
        with self._lock:
            if directory in self._wds:
                return True
            wd = int(self._libc.inotify_add_watch(self._fd, os.fsencode(directory), _MASK))
            if wd < 0:
                return False
            self._wds[directory] = wd
            self._dirs[wd] = directory
            return True

    def watched(self, directory: str) -> bool:
        with self._lock:
            return directory in self._wds

    def drain(self) -> set[str] | None:
        """Ids of the containers whose status files changed since the last drain; None when
        that is not known (no inotify, or events were lost): then every file may have."""
        if self._fd < 0:
            return None
        changed: set[str] = set()
        lost = False
        with self._lock:
            while True:
                try:
                    buf = os.read(self._fd, 65536)
                except BlockingIOError:
                    break
                except OSError as exc:
                    if exc.errno == errno.EINTR:
                        continue
                    raise
                offset = 0
                while offset + _HEADER.size <= len(buf):
                    wd, mask, _cookie, length = _HEADER.unpack_from(buf, offset)
                    name = buf[offset + _HEADER.size:offset + _HEADER.size + length]
                    offset += _HEADER.size + length
                    if mask & _IN_Q_OVERFLOW:
                        lost = True
                    if mask & _IN_IGNORED:   # the directory went (pod removed): no longer
                        directory = self._dirs.pop(wd, None)   # watched, so callers must
                        if directory is not None:              # look at its files again
                            self._wds.pop(directory, None)
                        lost = True
                        continue
                    text = name.rstrip(b"\0").decode(errors="replace")
                    if text.endswith(_SUFFIX):
                        changed.add(text[:-len(_SUFFIX)])
        return None if lost else changed

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
            self._wds.clear()
            self._dirs.clear()
