"""A reader of gzip streams (RFC 1952) for layer unpacking, with zlib (or ISA-L) doing the work.

`gzip.GzipFile` reads its input 8 KiB at a time and runs Python code per read, which made
it a visible part of a cold pull (6 400 reads for a 50 MB image). This reader hands zlib
1 MiB of input at a time and asks for at most the caller's buffer of output, so memory
stays bounded whatever the compression ratio. zlib (`wbits=31`) parses each member's
header and checks its CRC-32 and length trailer itself. Like GzipFile it accepts several
members one after another and zero bytes between or after them (padding some tools
write); anything else after a member, a stream that ends inside a member, and a failed
check raise `gzip.BadGzipFile` or `EOFError`, which the unpacker reports as a corrupt
layer.

Inflating is done by ISA-L (the `isal` package's zlib-compatible `isal_zlib`), about twice
as fast as zlib on the same data, when it is importable; else by zlib. Both parse the
same gzip members and check the same CRC-32 and length trailers.
"""
from __future__ import annotations

import gzip
import io
import zlib
from types import ModuleType
from typing import BinaryIO

_inflater: ModuleType
try:
    from isal import isal_zlib as _inflater
    _ERRORS: tuple[type[Exception], ...] = (zlib.error, _inflater.error)
except ImportError:   # pragma: no cover - isal is a dependency; zlib is the fallback
    _inflater = zlib
    _ERRORS = (zlib.error,)

INFLATER = _inflater.__name__

INPUT_CHUNK = 1024 * 1024
_GZIP_MAGIC = b"\x1f\x8b"


class GzipStream(io.RawIOBase):
    def __init__(self, raw: BinaryIO, chunk: int = INPUT_CHUNK) -> None:
        self._raw = raw
        self._chunk = chunk
        self._inflate = _inflater.decompressobj(wbits=31)
        self._done = False

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        want = len(b)
        if want == 0 or self._done:
            return 0
        while True:
            if self._inflate.eof:
                data = self._next_member()
                if not data:
                    self._done = True
                    return 0
            elif self._inflate.unconsumed_tail:
                data = self._inflate.unconsumed_tail
            else:
                data = self._raw.read(self._chunk)
                if not data:
                    raise EOFError("compressed layer ended before the end of its gzip member")
            try:
                out = self._inflate.decompress(data, want)
            except _ERRORS as e:
                raise gzip.BadGzipFile(f"gzip data is corrupt: {e}") from None
            if out:
                n = len(out)
                b[:n] = out
                return n

    def _next_member(self) -> bytes:
        """After a member: the start of the next one, or b"" at the end of the stream."""
        rest = self._inflate.unused_data
        while True:
            rest = rest.lstrip(b"\0")
            if rest:
                break
            rest = self._raw.read(self._chunk)
            if not rest:
                return b""
        if len(rest) < 2:
            rest += self._raw.read(self._chunk)
        if rest[:2] != _GZIP_MAGIC:
            raise gzip.BadGzipFile("data after the end of the gzip stream is not gzip")
        self._inflate = _inflater.decompressobj(wbits=31)
        return rest
