"""Fuzzing the terminal resize messages of exec/attach
(cri_server.streaming.remotecommand.parse_resize_messages).

kubectl and crictl write one JSON TerminalSize per resize on the SPDY `resize` stream or
WebSocket channel 4, as Go's json.Encoder does ({"Width":80,"Height":24} and a newline),
in chunks that need not end at a message boundary. Whatever bytes arrive, the parser returns
sizes within 0..65535, consumes every complete message, keeps only a bounded incomplete rest,
and raises nothing (an exception ends the resize pump: later resizes are lost). A parser
that never returns is ended by pytest-timeout.
"""
from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from cri_server.streaming.remotecommand import parse_resize_messages
from tests.support.fuzz import chunked, fuzz_settings, mutated

KUBECTL = b'{"Width":80,"Height":24}\n{"Width":132,"Height":43}\n'
SAMPLES = [KUBECTL, b'{"width": 100, "height": 30}', b'{"Width":0,"Height":0}\n' * 3]


def _parse_all(chunks: list[bytes]) -> tuple[list[tuple[int, int]], bytearray]:
    buf = bytearray()
    sizes: list[tuple[int, int]] = []
    for chunk in chunks:
        buf += chunk
        sizes += parse_resize_messages(buf)
        assert len(buf) <= max(4096, len(chunk))
    return sizes, buf


@fuzz_settings(300)
@given(mutated(SAMPLES), st.lists(st.integers(0, 1 << 16), max_size=5))
@example(KUBECTL, [7, 30])
@example(b"1" + b"\xff" * 5, [])                       # undecodable bytes after a value
@example(b"\xff" + KUBECTL, [])                         # an undecodable byte before the sizes
@example(b"[" * 3000, [])                               # nested deeper than json recurses
@example(b'{"Width": 1' + b"0" * 5000 + b', "Height": 1}', [])  # more digits than int() takes
@example('{"Width":80,"Height":24,"T":"é"}'.encode(), [31])     # a character cut in two
def test_resize_messages_parse_or_are_dropped(data: bytes, cuts: list[int]) -> None:
    sizes, _ = _parse_all(chunked(data, cuts))
    assert all(0 <= w <= 0xFFFF and 0 <= h <= 0xFFFF for w, h in sizes)


@fuzz_settings(100)
@given(st.lists(st.tuples(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF)), max_size=8),
       st.lists(st.integers(0, 1 << 16), max_size=5))
def test_every_resize_kubectl_sends_arrives(sizes: list[tuple[int, int]], cuts: list[int]) -> None:
    data = b"".join(b'{"Width":%d,"Height":%d}\n' % s for s in sizes)
    got, rest = _parse_all(chunked(data, cuts))
    assert got == sizes and rest == b""


def test_a_long_run_of_messages_is_all_consumed() -> None:
    """64 KiB of one-byte values (not sizes) and then two sizes."""
    buf = bytearray(b"1 " * 32768 + KUBECTL)
    assert parse_resize_messages(buf) == [(80, 24), (132, 43)] and buf == b""
