"""CRI container log writer.

Each line: `<RFC3339Nano UTC> <stdout|stderr> <F|P> <text>\n`. A line longer
than `max_line` bytes (16 KiB, containerd's default max_container_log_line_size)
is written as P (partial) chunks followed by an F chunk. A trailing "\r\n" loses
its "\r" like Go's bufio.ReadLine does in containerd. Text without a newline is
written at once as a P chunk (its line goes on in the next chunk; flush(), the end of the
stream, ends an open line with an F chunk): the shim never holds output it read but did
not write, so a shim killed with -9 loses nothing it had read (docs/architecture.md, "What
survives kill -9 of what"). Only a lone trailing "\r" is held (it may be the first half of
"\r\n"), and written by the next chunk or flush().

The file is opened by `open_log_file`, never through a symlink below the pod's log directory.
"""
from __future__ import annotations

import errno
import os
import stat
import time
from collections.abc import Callable

from pycri_common.errors import FailedPrecondition, InvalidArgument, PycriError
from runtime import dirfd

MAX_LINE = 16 * 1024
_FILE_FLAGS = (os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
               | os.O_NOCTTY | os.O_NONBLOCK)


def open_log_file(path: str, log_dir: str | None,
                  refused: type[PycriError] = InvalidArgument) -> int:
    """An O_APPEND fd of the log file `path` (created, with its directories, if missing).

    `log_dir` is the pod's log directory (PodSandboxConfig.log_directory): kubelet's, trusted
    as containerd and CRI-O trust it. It is created if missing and resolved as given, symlinks
    in it followed, its own last component included: only the host can put one there (an
    admin moving pod logs to another disk, say), and kubelet itself creates and removes it.
    Everything below it is not trusted (a container with the log directory mounted can write
    there): each sub-directory of `path` is created and opened one component at a time without
    following symlinks (runtime.dirfd), the file with O_NOFOLLOW, and a symlink anywhere there
    -- or a file that is not a regular file, or one with a second hard link -- is refused with
    the error class `refused` (a pycri_common.errors class) naming it.
    Without `log_dir`, the file's own directory is the trusted one.
    """
    root = os.path.normpath(log_dir) if log_dir else os.path.dirname(path)
    rel = os.path.relpath(path, root)
    if not os.path.isabs(path) or rel in (".", "..") or rel.startswith("../"):
        raise InvalidArgument(f"log file {path} is not below the log directory {root}")
    os.makedirs(root, 0o755, exist_ok=True)
    parts = rel.split("/")
    root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        dir_fd = dirfd.open_dirs(root_fd, parts[:-1], create=True)
    except dirfd.UnsafeComponent as e:
        what = "a symlink" if e.symlink else "not a directory"
        raise refused(f"log file {path}: {root}{e.walked} is {what}; the log path below "
                      f"the pod's log directory is never followed through symlinks") from None
    finally:
        os.close(root_fd)
    try:
        try:
            fd = os.open(parts[-1], _FILE_FLAGS, 0o640, dir_fd=dir_fd)
        except OSError as e:
            if e.errno != errno.ELOOP:
                raise
            raise refused(f"log file {path} is a symlink; a log file is never opened "
                          "through one") from None
    finally:
        os.close(dir_fd)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise refused(f"log file {path} exists and is not a regular file "
                      f"({stat.filemode(st.st_mode)})")
    if st.st_nlink > 1:
        # A hard link made below the log directory would have the shim append to a file
        # elsewhere on the same filesystem; kubelet's log files never have a second name.
        os.close(fd)
        raise refused(f"log file {path} has {st.st_nlink} hard links; a log file with "
                      "another name elsewhere is never written")
    os.set_blocking(fd, True)
    return fd


def rfc3339nano(ns: int) -> str:
    """Go's time.RFC3339Nano in UTC: fraction without trailing zeros, 'Z' suffix."""
    secs, frac = divmod(ns, 1_000_000_000)
    base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs))
    if frac:
        return f"{base}.{frac:09d}".rstrip("0") + "Z"
    return base + "Z"


class CriLogWriter:
    """Writes stdout/stderr chunks of one container to its CRI log file."""

    def __init__(self, path: str, max_line: int = MAX_LINE,
                 clock: Callable[[], int] = time.time_ns, log_dir: str | None = None) -> None:
        self.path = path
        self.log_dir = log_dir
        self.max_line = max_line
        self._clock = clock
        self._pending: dict[str, bytes] = {"stdout": b"", "stderr": b""}  # a held "\r"
        self._open: dict[str, bool] = {"stdout": False, "stderr": False}  # P written last
        self._fd = -1
        self.open()

    def open(self) -> None:
        self._fd = open_log_file(self.path, self.log_dir)

    def reopen(self) -> None:
        """Open the file anew (kubelet renamed it for rotation), then close the old one: when
        the new one cannot be opened (FailedPrecondition for a symlink) the old one stays."""
        fd = open_log_file(self.path, self.log_dir, refused=FailedPrecondition)
        self.close()
        self._fd = fd

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def write(self, stream: str, data: bytes) -> None:
        """Append output of `stream` ("stdout" or "stderr")."""
        buf = self._pending[stream] + data
        out: list[bytes] = []
        ts = rfc3339nano(self._clock()).encode()
        tag = stream.encode()
        start = 0
        while True:
            nl = buf.find(b"\n", start)
            if nl < 0 or nl - start > self.max_line:
                if len(buf) - start > self.max_line:
                    out.append(b"%s %s P %s\n" % (ts, tag, buf[start:start + self.max_line]))
                    start += self.max_line
                    continue
                break
            line = buf[start:nl]
            if line.endswith(b"\r"):
                line = line[:-1]
            out.append(b"%s %s F %s\n" % (ts, tag, line))
            start = nl + 1
        rest = buf[start:]
        held = b"\r" if rest.endswith(b"\r") else b""
        if len(rest) > len(held):
            out.append(b"%s %s P %s\n" % (ts, tag, rest[:len(rest) - len(held)]))
        self._pending[stream] = held
        if out:
            self._open[stream] = out[-1].startswith(b"%s %s P " % (ts, tag))
            self._emit(b"".join(out))

    def flush(self, stream: str) -> None:
        """End of `stream`: write what is held as a full line."""
        rest = self._pending[stream]
        if rest or self._open[stream]:
            self._pending[stream] = b""
            self._open[stream] = False
            ts = rfc3339nano(self._clock()).encode()
            self._emit(b"%s %s F %s\n" % (ts, stream.encode(), rest))

    def _emit(self, data: bytes) -> None:
        if self._fd < 0:
            return
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
