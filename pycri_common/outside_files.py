"""Opening files whose path comes from a client, a config or an image: never block, never read
without bound.

A path named by someone else may be a FIFO (open() would wait for a writer for ever and pin the
RPC worker), a device, a directory or a huge file. ``open_regular_file`` opens it with
O_NONBLOCK|O_NOCTTY (a FIFO or tty opens at once), fstat's the descriptor and accepts only a
regular file; ``read_regular_file`` also bounds the bytes read. Both raise InvalidArgument
naming the file and what is wrong with it.
"""
from __future__ import annotations

import fcntl
import os
import stat

from pycri_common.errors import InvalidArgument

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISLNK, "a symlink"))


def _kind(mode: int) -> str:
    for test, name in _KINDS:
        if test(mode):
            return name
    return "not a regular file"


def open_regular_file(path: str | os.PathLike[str], what: str, nofollow: bool = False) -> int:
    """A blocking read-only descriptor of the regular file at path (the caller closes it).

    nofollow: refuse a symlink as the last component (O_NOFOLLOW)."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    if nofollow:
        flags |= os.O_NOFOLLOW
    try:
        fd = os.open(path, flags)
    except OSError as e:
        if nofollow and e.errno == 40:  # ELOOP: the last component is a symlink
            raise InvalidArgument(f"{what} {path}: is a symlink (not followed)") from None
        raise InvalidArgument(f"{what} {path}: {e.strerror}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise InvalidArgument(f"{what} {path}: is {_kind(mode)}, not a regular file")
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_regular_file(path: str | os.PathLike[str], max_bytes: int, what: str,
                      nofollow: bool = False) -> bytes:
    """The content of the regular file at path; InvalidArgument when larger than max_bytes."""
    fd = open_regular_file(path, what, nofollow)
    try:
        chunks: list[bytes] = []
        n = 0
        while n <= max_bytes:
            b = os.read(fd, min(max_bytes + 1 - n, 1 << 20))
            if not b:
                break
            chunks.append(b)
            n += len(b)
    except OSError as e:
        raise InvalidArgument(f"{what} {path}: {e.strerror}") from None
    finally:
        os.close(fd)
    if n > max_bytes:
        raise InvalidArgument(f"{what} {path}: larger than {max_bytes} bytes")
    return b"".join(chunks)
