"""Attach frame codec."""
from __future__ import annotations

import pytest

from runtime.shim import frames


def test_roundtrip_byte_by_byte() -> None:
    data = frames.encode(frames.STDOUT, b"hello") + frames.encode(frames.EXITED, b"{}") + \
        frames.encode(frames.STDIN_CLOSE)
    dec = frames.FrameDecoder()
    got = []
    for i in range(len(data)):
        got += dec.feed(data[i:i + 1])
    assert got == [(frames.STDOUT, b"hello"), (frames.EXITED, b"{}"), (frames.STDIN_CLOSE, b"")]
    assert dec.pending == 0


def test_header_layout() -> None:
    assert frames.encode(frames.STDERR, b"ab") == b"\x02\x00\x00\x00\x02ab"


def test_incomplete_frame_is_held() -> None:
    dec = frames.FrameDecoder()
    assert dec.feed(b"\x01\x00\x00\x00\x05abc") == []
    assert dec.pending == 8
    assert dec.feed(b"de") == [(1, b"abcde")]


@pytest.mark.parametrize("bad", [b"\x09\x00\x00\x00\x00", b"\x01\xff\xff\xff\xff"])
def test_invalid_frames_rejected(bad: bytes) -> None:
    with pytest.raises(frames.FrameError):
        frames.FrameDecoder().feed(bad)


def test_encode_rejects_unknown_stream_and_oversize() -> None:
    with pytest.raises(frames.FrameError):
        frames.encode(7, b"")
    with pytest.raises(frames.FrameError):
        frames.encode(frames.STDIN, b"x" * (frames.MAX_PAYLOAD + 1))
