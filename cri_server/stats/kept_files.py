"""cgroup files kept open between stats polls and re-read with pread(2) at offset 0.

kubelet polls the stats Lists for every container, and each reading is a handful of small
cgroup files. Opening and closing one costs two path walks through kernfs, several times what
reading it costs (open+read+close of memory.usage_in_bytes ~15 us, pread of the open file
~2 us, on the development VM). cgroup files are seq_files: a read at offset 0 regenerates
their content, so an fd kept open gives the current values on every pread.

Files are grouped by the cgroup (or any key) they belong to. The first file of a group is its
anchor: when it cannot be read the cgroup is gone (not made yet, or removed) and the whole
group is closed. A kept fd of a cgroup that was removed fails with ENODEV; it is closed and the
path opened again once (a cgroup made again at the same path). A file missing while its anchor
reads (memory.memsw.* without swap accounting, say) is remembered as missing for the group's
life instead of being looked up on every poll. Groups nobody read for `forget_after` seconds
are closed, and at most `max_fds` fds are kept (a quarter of RLIMIT_NOFILE by default); past
that, files are opened, read and closed as before.

Reads of one group hold the lock, so no fd is closed (and its number reused) under a reader.
"""
from __future__ import annotations

import os
import resource
import threading
import time
from collections.abc import Container, Mapping
from dataclasses import dataclass, field

_CHUNK = 65536
FORGET_AFTER = 60.0


def default_max_fds() -> int:
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 16384
    return max(0, min(soft // 4, 16384))


def _pread_all(fd: int) -> str:
    chunks = [os.pread(fd, _CHUNK, 0)]
    while len(chunks[-1]) == _CHUNK:  # a short read is the end (seq_file fills the buffer)
        chunks.append(os.pread(fd, _CHUNK, _CHUNK * len(chunks)))
    return b"".join(chunks).decode()


@dataclass
class _Group:
    used: float
    fds: dict[str, int] = field(default_factory=dict)
    missing: set[str] = field(default_factory=set)


class KeptFiles:
    def __init__(self, max_fds: int | None = None, forget_after: float = FORGET_AFTER) -> None:
        self.max_fds = default_max_fds() if max_fds is None else max_fds
        self.forget_after = forget_after
        self._lock = threading.Lock()
        self._groups: dict[str, _Group] = {}
        self._open_fds = 0
        self._last_prune = time.monotonic()

    def read_group(self, key: str, files: Mapping[str, str]) -> dict[str, str | None] | None:
        """The text of each file (None: could not be read), or None when the first file
        (the anchor) cannot be read."""
        now = time.monotonic()
        with self._lock:
            group = self._groups.get(key)
            if group is None:
                group = self._groups[key] = _Group(now)
            group.used = now
            out: dict[str, str | None] = {}
            anchor = True
            for name, path in files.items():
                text = self._read(group, path, anchor)
                if text is None and anchor:
                    self._close(key)
                    return None
                out[name] = text
                anchor = False
            if now - self._last_prune > self.forget_after / 4:
                self._prune(now)
            return out

    def forget(self, key: str) -> None:
        with self._lock:
            self._close(key)

    def forget_prefixed(self, prefix: str, keep: Container[str]) -> None:
        """Closes every group whose key starts with `prefix` and is not in `keep`."""
        with self._lock:
            for key in [k for k in self._groups if k.startswith(prefix) and k not in keep]:
                self._close(key)

    def open_fds(self) -> int:
        with self._lock:
            return self._open_fds

    # -- lock held -------------------------------------------------------------------
    def _read(self, group: _Group, path: str, anchor: bool) -> str | None:
        if path in group.missing:
            return None
        fd = group.fds.get(path)
        if fd is not None:
            try:
                return _pread_all(fd)
            except (OSError, UnicodeDecodeError):  # ENODEV: the cgroup was removed
                del group.fds[path]
                self._open_fds -= 1
                os.close(fd)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            if not anchor:
                group.missing.add(path)
            return None
        except OSError:
            return None
        try:
            text = _pread_all(fd)
        except (OSError, UnicodeDecodeError):
            os.close(fd)
            return None
        if self._open_fds < self.max_fds:
            group.fds[path] = fd
            self._open_fds += 1
        else:
            os.close(fd)
        return text

    def _close(self, key: str) -> None:
        group = self._groups.pop(key, None)
        if group is None:
            return
        for fd in group.fds.values():
            os.close(fd)
        self._open_fds -= len(group.fds)

    def _prune(self, now: float) -> None:
        self._last_prune = now
        for key, group in list(self._groups.items()):
            if now - group.used > self.forget_after:
                self._close(key)
