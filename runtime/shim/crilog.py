"""CRI container log writer.

Each line: `<RFC3339Nano UTC> <stdout|stderr> <F|P> <text>\n`. A line longer
than `max_line` bytes (16 KiB, containerd's default max_container_log_line_size)
is written as P (partial) chunks followed by an F chunk. A trailing "\r\n" loses
its "\r" like Go's bufio.ReadLine does in containerd. Text without a newline is
held until the newline, the size limit, or flush() (end of stream: written as F).
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable

MAX_LINE = 16 * 1024


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
                 clock: Callable[[], int] = time.time_ns) -> None:
        self.path = path
        self.max_line = max_line
        self._clock = clock
        self._pending: dict[str, bytes] = {"stdout": b"", "stderr": b""}
        self._fd = -1
        self.open()

    def open(self) -> None:
        parent = os.path.dirname(self.path)
        if parent:
            os.makedirs(parent, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)

    def reopen(self) -> None:
        """Close and reopen the file (kubelet renamed it for rotation)."""
        self.close()
        self.open()

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
        self._pending[stream] = buf[start:]
        if out:
            self._emit(b"".join(out))

    def flush(self, stream: str) -> None:
        """End of `stream`: write what is held as a full line."""
        rest = self._pending[stream]
        if rest:
            self._pending[stream] = b""
            ts = rfc3339nano(self._clock()).encode()
            self._emit(b"%s %s F %s\n" % (ts, stream.encode(), rest))

    def _emit(self, data: bytes) -> None:
        if self._fd < 0:
            return
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
