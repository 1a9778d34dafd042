"""Fuzzing the CRI log writer (runtime.shim.crilog) with what a container prints.

Nothing in pycri reads CRI log lines back (kubelet does), so the property is the one kubelet's
parser relies on: whatever bytes, in whatever chunks, a container writes on stdout and stderr,
every line of the file is `<RFC3339Nano UTC> <stdout|stderr> <P|F> <text>\\n` with text
without a newline and at most max_line bytes, and joining a stream's texts (a newline after
each F) gives back what it wrote (carriage returns aside: "\\r\\n" loses its "\\r"). Seeds:
a shell's "\\r\\n" output on a tty, a line of exactly max_line bytes, one just over it.
"""
from __future__ import annotations

import os
import re
import tempfile

from hypothesis import example, given
from hypothesis import strategies as st

from runtime.shim.crilog import CriLogWriter
from tests.support.fuzz import fuzz_settings

_LINE = re.compile(rb"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,9})?Z) (stdout|stderr) ([PF]) (.*)",
                   re.DOTALL)
_STREAMS = ("stdout", "stderr")

_chunk = st.tuples(st.sampled_from(_STREAMS),
                   st.binary(max_size=80) | st.sampled_from([b"\n", b"\r\n", b"\r", b"x" * 16]))


@fuzz_settings(200)
@given(st.lists(_chunk, max_size=12), st.integers(1, 24), st.integers(0, 2**63 - 1))
@example([("stdout", b"/ # ls\r\nbin  etc\r\n/ # ")], 16, 1_733_140_000_123_456_789)
@example([("stdout", b"x" * 16 + b"\n"), ("stderr", b"y" * 17 + b"\n")], 16, 0)
@example([("stdout", b"x" * 15 + b"\r"), ("stdout", b"\n")], 16, 10**18)
def test_log_lines_are_well_formed_and_lose_nothing(chunks: list[tuple[str, bytes]],
                                                    max_line: int, now: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "c.log")
        w = CriLogWriter(path, max_line=max_line, clock=lambda: now)
        for stream, data in chunks:
            w.write(stream, data)
        for stream in _STREAMS:
            w.flush(stream)
        w.close()
        with open(path, "rb") as f:
            content = f.read()
    assert content == b"" or content.endswith(b"\n")
    got = dict.fromkeys(_STREAMS, b"")
    for line in content.split(b"\n")[:-1]:
        m = _LINE.fullmatch(line)
        assert m, line
        text = m.group(4)
        assert len(text) <= max_line
        got[m.group(2).decode()] += text + (b"\n" if m.group(3) == b"F" else b"")
    for stream in _STREAMS:
        wrote = b"".join(d for s, d in chunks if s == stream)
        if wrote and not wrote.endswith(b"\n"):
            wrote += b"\n"   # flush(): the open line ends with an F record
        assert got[stream].replace(b"\r", b"") == wrote.replace(b"\r", b"")
