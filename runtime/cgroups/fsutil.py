"""Small file helpers shared by the v1 and v2 cgroup managers."""
from __future__ import annotations

import errno
import os
import signal
import time

from pycri_common.errors import InvalidArgument

_CHUNK = 65536


def read(path: str) -> str:
    """The whole file as text. Raw os.open/os.read: the stats Lists read a handful of cgroup
    files per container on every call, and a buffered text open costs several times more."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = [os.read(fd, _CHUNK)]
        # A short read is the end for these files (seq_file fills the buffer it is given),
        # which saves a second read(2) per file; a full one may have more behind it.
        while len(chunks[-1]) == _CHUNK:
            chunks.append(os.read(fd, _CHUNK))
    finally:
        os.close(fd)
    return b"".join(chunks).decode()


def parse_int(text: str | None, default: int = 0) -> int:
    """A cgroup file's number: "max" is -1; default for None (unreadable) or no number."""
    if text is None:
        return default
    value = text.strip()
    if value == "max":
        return -1
    try:
        return int(value)
    except ValueError:
        return default


def read_int(path: str, default: int = 0) -> int:
    try:
        text = read(path)
    except OSError:
        return default
    return parse_int(text, default)


def write(path: str, value: str, field: str) -> None:
    """Write one cgroup file; errors name the file, the value and the spec field."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    except FileNotFoundError as e:
        raise InvalidArgument(f"{field}: {path} does not exist (controller missing?)") from e
    try:
        os.write(fd, value.encode())
    except OSError as e:
        raise InvalidArgument(f"{field}: writing {value!r} to {path}: {e.strerror}") from e
    finally:
        os.close(fd)


def procs(directory: str) -> list[int]:
    try:
        return [int(x) for x in read(os.path.join(directory, "cgroup.procs")).split()]
    except OSError:
        return []


def remove_tree(directory: str, timeout: float = 2.0) -> None:
    """rmdir a cgroup and its children bottom-up, SIGKILLing processes still in them."""
    if not os.path.isdir(directory):
        return
    for entry in os.scandir(directory):
        if entry.is_dir(follow_symlinks=False):
            remove_tree(entry.path, timeout)
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.rmdir(directory)
            return
        except FileNotFoundError:
            return
        except OSError as e:
            if e.errno != errno.EBUSY or time.monotonic() > deadline:
                raise
        for pid in procs(directory):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.01)
