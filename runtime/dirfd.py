"""Opening a directory one path component at a time, never through a symlink.

Each step is an openat (and, when asked, mkdirat) relative to the fd of the previous
directory with O_NOFOLLOW, so a component swapped for a symlink meanwhile (by a container
writing into a shared volume, or by an earlier entry of a layer tar) is refused instead of
followed out of the tree. Shared by the container init (securejoin) and layer unpacking.
"""
from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterable

#: An O_PATH fd: enough to be the dir_fd of *at() calls.
PATH_DIR_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class UnsafeComponent(Exception):
    """A component is a symlink or not a directory."""

    def __init__(self, walked: str, symlink: bool) -> None:
        super().__init__(walked)
        self.walked = walked      # "/a/b": the path up to and including the component
        self.component = walked.rsplit("/", 1)[-1]
        self.symlink = symlink


def open_dirs(start_fd: int, parts: Iterable[str], *, create: bool, mode: int = 0o755,
              flags: int = PATH_DIR_FLAGS) -> int:
    """fd of start/parts...; creates missing directories when `create`, else raises
    FileNotFoundError (its filename is the walked path). `flags` must include O_DIRECTORY
    and O_NOFOLLOW."""
    fd = os.dup(start_fd)
    walked = ""
    try:
        for comp in parts:
            walked += "/" + comp
            try:
                try:
                    nfd = os.open(comp, flags, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise FileNotFoundError(errno.ENOENT, "no such directory",
                                                walked) from None
                    with contextlib.suppress(FileExistsError):  # made meanwhile: reopen checks
                        os.mkdir(comp, mode, dir_fd=fd)
                    nfd = os.open(comp, flags, dir_fd=fd)
            except OSError as e:
                if e.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                st = os.stat(comp, dir_fd=fd, follow_symlinks=False)
                raise UnsafeComponent(walked, stat.S_ISLNK(st.st_mode)) from None
            os.close(fd)
            fd = nfd
        return fd
    except BaseException:
        os.close(fd)
        raise
