"""A recording runtime.syscalls.Syscalls for unit tests of the rootfs and init sequences.

Nothing is mounted, pivoted, created as a node or entered: each call is appended to `calls`
as a tuple (name, args...) and returns. Paths of the form /proc/self/fd/N and dir_fd
arguments are resolved to the path the fd points at when the call is made, so a test can
assert on readable paths. `fail(name, match, err)` makes the calls of that name whose
arguments include `match` (one argument equal to it) raise OSError(err) as the real calls do
(the first `times` of them; all by default).
`mountinfo` is a fixed table (default: "/" a shared mount), not the host's.
"""
from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from typing import Any

from runtime.syscalls import Syscalls

DEFAULT_MOUNTINFO = "1 0 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"


@dataclass
class _Failure:
    name: str
    match: str | None
    err: int
    times: int | None


def _resolve(value: Any) -> Any:
    if isinstance(value, str) and value.startswith("/proc/self/fd/"):
        try:
            return os.readlink(value)
        except OSError:
            return value
    return value


def _fd_dir(fd: int) -> str:
    return os.readlink(f"/proc/self/fd/{fd}")


class RecordingSyscalls(Syscalls):
    def __init__(self, mountinfo: str = DEFAULT_MOUNTINFO) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.table = mountinfo
        self._failures: list[_Failure] = []

    def fail(self, name: str, match: str | None = None, err: int = errno.EPERM,
             times: int | None = None) -> None:
        self._failures.append(_Failure(name, match, err, times))

    def named(self, *names: str) -> list[tuple[Any, ...]]:
        """The recorded calls with one of these names, in order."""
        return [c for c in self.calls if c[0] in names]

    def _record(self, name: str, *args: Any) -> None:
        call = (name, *(_resolve(a) for a in args))
        self.calls.append(call)
        for f in self._failures:
            if f.name != name or f.times == 0:
                continue
            if f.match is not None and f.match not in call[1:]:
                continue
            if f.times is not None:
                f.times -= 1
            raise OSError(f.err, f"{name}: {os.strerror(f.err)}")

    # -- mounts ------------------------------------------------------------------------------
    def mount(self, source: str | None, target: str, fstype: str | None = None,
              flags: int = 0, data: str | None = None) -> None:
        self._record("mount", source, target, fstype, flags, data)

    def umount2(self, target: str, flags: int = 0) -> None:
        self._record("umount2", target, flags)

    def mount_setattr(self, path: str, attr_set: int, attr_clr: int = 0,
                      recursive: bool = True, dirfd: int = -100) -> None:
        where = os.path.join(_fd_dir(dirfd), path) if dirfd >= 0 else path
        self._record("mount_setattr", where.rstrip("/") or "/", attr_set, attr_clr, recursive)

    def mountinfo(self) -> str:
        return self.table

    def pivot_root(self, new_root: str, put_old: str) -> None:
        self._record("pivot_root", new_root, put_old)

    def root_after_pivot(self, new_root: str) -> str:
        return new_root  # nothing pivoted: the new root is still seen at its path

    # -- nodes and directories ------------------------------------------------------------------
    def mknod(self, name: str, mode: int, device: int, dir_fd: int) -> None:
        self._record("mknod", os.path.join(_fd_dir(dir_fd), name), mode, device)

    def symlink(self, target: str, name: str, dir_fd: int | None = None) -> None:
        self._record("symlink", target,
                     os.path.join(_fd_dir(dir_fd), name) if dir_fd is not None else name)

    def chown(self, name: str, uid: int, gid: int, dir_fd: int) -> None:
        self._record("chown", os.path.join(_fd_dir(dir_fd), name), uid, gid)

    def unlink(self, name: str, dir_fd: int) -> None:
        self._record("unlink", os.path.join(_fd_dir(dir_fd), name))

    def chdir(self, path: str) -> None:
        self._record("chdir", path)

    def fchdir(self, fd: int) -> None:
        self._record("fchdir", _fd_dir(fd))

    # -- namespaces and the process ----------------------------------------------------------
    def unshare(self, flags: int) -> None:
        self._record("unshare", flags)

    def setns(self, fd: int, nstype: int = 0) -> None:
        self._record("setns", _fd_dir(fd), nstype)

    def setns_path(self, path: str, nstype: int = 0) -> None:
        self._record("setns", path, nstype)

    def sethostname(self, name: str) -> None:
        self._record("sethostname", name)

    def prctl(self, option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0,
              arg5: int = 0) -> int:
        self._record("prctl", option, arg2)
        return 0

    def set_no_new_privs(self) -> None:
        self._record("set_no_new_privs")

    # -- pod user namespaces -----------------------------------------------------------------
    def bind_idmapped(self, source: str, userns_fd: int, to_dirfd: int, to_path: str = "",
                      recursive: bool = True) -> None:
        self._record("bind_idmapped", source, os.path.join(_fd_dir(to_dirfd), to_path).rstrip("/"),
                     recursive)

    def setfsuid(self, uid: int) -> int:
        self._record("setfsuid", uid)
        return 0

    def setfsgid(self, gid: int) -> int:
        self._record("setfsgid", gid)
        return 0

    def raise_effective_caps(self) -> None:
        self._record("raise_effective_caps")
