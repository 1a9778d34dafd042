"""Reading what a container's init or an exec process reports on its report pipe (contract 5).

The child writes JSON-object lines: {"pid": n} (its pid after a pid-namespace fork),
{"ready": true, "user": {...}} (a container's init waits at its gate), {"error": msg,
"kind": <class name in pycri_common.errors>}; the end of the pipe (EOF) says the exec
succeeded or the child is gone. runtime.shim.containers and runtime.shim.execs read it
with `read_reports`.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Protocol

from pycri_common import errors
from pycri_common.errors import PycriError
from runtime.shim.podstate import READ_CHUNK


class Reporting(Protocol):
    """A process with a report pipe (runtime.shim.records.Container, ExecProcess)."""

    report_fd: int
    report_buf: bytes


@dataclass
class Report:
    """One report line, parsed; a line that says nothing known leaves every field empty."""

    pid: int = 0
    ready: bool = False
    user: dict[str, Any] = field(default_factory=dict)
    error: PycriError | None = None
    home: str | None = None   # the user's home, from the container's /etc/passwd (init)

    @classmethod
    def from_json(cls, msg: dict[str, Any]) -> Report:
        pid = msg.get("pid")
        user = msg.get("user")
        error = None
        if "error" in msg:
            kind = msg.get("kind")
            error = errors.from_kind(kind if isinstance(kind, str) and kind else "PycriError",
                                     str(msg["error"]))
        home = msg.get("home")
        return cls(pid if isinstance(pid, int) and not isinstance(pid, bool) and pid > 0 else 0,
                   bool(msg.get("ready")), user if isinstance(user, dict) else {}, error,
                   home if isinstance(home, str) else None)


def take_report_messages(buf: bytes) -> tuple[list[dict[str, Any]], bytes]:
    """The complete JSON-object lines an init or exec process reported, and the rest."""
    msgs: list[dict[str, Any]] = []
    while b"\n" in buf:
        line, buf = buf.split(b"\n", 1)
        try:
            msg = json.loads(line)
        except (ValueError, RecursionError):  # a report nested past the parser's depth is no report
            continue
        if isinstance(msg, dict):
            msgs.append(msg)
    return msgs, buf


def read_chunk(fd: int) -> bytes | None:
    """One chunk of a report pipe: b"" at EOF (or a read error), None when nothing is there."""
    try:
        return os.read(fd, READ_CHUNK)
    except BlockingIOError:
        return None
    except OSError:
        return b""


def read_reports(proc: Reporting) -> tuple[list[Report], bool]:
    """Everything the pipe holds now (it is non-blocking): the complete report lines, and
    whether it reached EOF. An incomplete last line waits in proc.report_buf."""
    reports: list[Report] = []
    while proc.report_fd >= 0:
        data = read_chunk(proc.report_fd)
        if data is None:
            return reports, False
        if not data:
            return reports, True
        msgs, proc.report_buf = take_report_messages(proc.report_buf + data)
        reports.extend(Report.from_json(m) for m in msgs)
    return reports, False
