"""imageservice.gzip_stream: the layer unpacker's gzip reader, against the stdlib's."""
from __future__ import annotations

import gzip
import io
import os
import zlib

import pytest

from imageservice import gzip_stream
from imageservice.gzip_stream import GzipStream


@pytest.fixture(autouse=True, params=["isal", "zlib"])
def inflater(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test runs with ISA-L (the default when importable) and with the zlib fallback."""
    if request.param == "zlib":
        monkeypatch.setattr(gzip_stream, "_inflater", zlib)
        monkeypatch.setattr(gzip_stream, "_ERRORS", (zlib.error,))
    else:
        assert gzip_stream.INFLATER == "isal.isal_zlib", "isal (a dependency) is not installed"
    return str(request.param)


def _read_all(data: bytes, chunk: int = 7, bufsize: int = 5) -> bytes:
    s = GzipStream(io.BytesIO(data), chunk=chunk)
    out = bytearray()
    buf = bytearray(bufsize)
    while True:
        n = s.readinto(buf)
        if n == 0:
            return bytes(out)
        out += buf[:n]


@pytest.mark.parametrize("chunk,bufsize", [(1, 1), (7, 5), (1 << 20, 1 << 20)])
def test_reads_what_gzip_wrote(chunk: int, bufsize: int) -> None:
    payload = os.urandom(3000) + b"a" * 50_000
    assert _read_all(gzip.compress(payload), chunk, bufsize) == payload


def test_several_members_and_zero_padding_like_gzipfile() -> None:
    data = gzip.compress(b"one ") + b"\0" * 3 + gzip.compress(b"") + gzip.compress(b"two") + b"\0" * 9
    assert gzip.decompress(data) == b"one two"
    assert _read_all(data) == b"one two"


def test_output_is_bounded_by_the_callers_buffer() -> None:
    s = GzipStream(io.BytesIO(gzip.compress(b"\0" * (8 << 20))))   # ratio ~1000:1
    buf = bytearray(4096)
    assert s.readinto(buf) <= 4096


def test_truncated_member_is_eof_error() -> None:
    data = gzip.compress(os.urandom(1000))
    with pytest.raises(EOFError):
        _read_all(data[:-20])


def test_bad_crc_is_reported() -> None:
    data = bytearray(gzip.compress(b"hello world"))
    data[-8] ^= 0xFF                                      # CRC-32 in the trailer
    with pytest.raises(gzip.BadGzipFile, match="corrupt"):
        _read_all(bytes(data))


def test_garbage_after_a_member_is_refused() -> None:
    with pytest.raises(gzip.BadGzipFile, match="not gzip"):
        _read_all(gzip.compress(b"x") + b"garbage")
