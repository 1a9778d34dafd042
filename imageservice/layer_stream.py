"""Unpacking a layer while it downloads: one pass over the bytes.

``unpack_download(chunks, blob, dest, layer)`` feeds the registry's chunks both to the
content store's BlobCheck (which hashes them; a BlobWriter also writes the blob's partial
file) and to the unpacker (which inflates and extracts the tar into ``dest`` and hashes the
uncompressed stream for the DiffID). When it returns, the whole blob has been read and
its size and digest checked; the caller then checks the DiffID and commits the blob (when
it keeps it) and the snapshot, in that order. Until then nothing is visible: the blob is a
file in ``ingest/`` and the layer a ``snapshots/tmp-*`` dir, both removed by the caller's
cleanup on any failure and by start-up recovery after a crash.

A blob whose bytes do not match its digest is reported as such even when the bad bytes
also broke the gzip or tar stream first: the unpacker's complaint about a corrupt layer is
replaced by the digest mismatch once the rest of the blob (bounded by the descriptor's
size) has been read.
"""
from __future__ import annotations

import io
import os
from collections.abc import Iterable, Iterator
from typing import BinaryIO, cast

from imageservice.content_store import BlobCheck
from imageservice.unpack import UnpackResult, unpack_layer
from pycri_common.errors import InvalidArgument


class TeeReader(io.RawIOBase):
    """A reader over an iterator of chunks; every chunk goes to blob first.

    read() hands out the chunks themselves when the caller asks for at least a chunk (the
    gzip reader asks for 1 MiB, as big as the registry client's reads), and peek() lets the
    unpacker sniff the compression without a buffering layer in between."""

    def __init__(self, chunks: Iterable[bytes], blob: BlobCheck) -> None:
        self._chunks: Iterator[bytes] = iter(chunks)
        self._blob = blob
        self._chunk = b""
        self._pos = 0

    def readable(self) -> bool:
        return True

    def _fill(self) -> bool:
        """False at the end of the chunks."""
        while self._pos >= len(self._chunk):
            chunk = next(self._chunks, None)
            if chunk is None:
                return False
            self._blob.write(chunk)
            self._chunk, self._pos = bytes(chunk), 0
        return True

    def peek(self, size: int = 0) -> bytes:
        if not self._fill():
            return b""
        return self._chunk[self._pos:]

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            return b"".join(iter(lambda: self.read(1 << 20), b""))
        if size == 0 or not self._fill():
            return b""
        chunk, pos = self._chunk, self._pos
        if pos == 0 and size >= len(chunk):
            self._pos = len(chunk)
            return chunk
        self._pos = min(pos + size, len(chunk))
        return chunk[pos:self._pos]

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(b))
        n = len(data)
        b[:n] = data
        return n

    def drain(self) -> None:
        """Reads the rest of the chunks (into blob)."""
        self._chunk, self._pos = b"", 0
        for chunk in self._chunks:
            self._blob.write(chunk)


def unpack_download(chunks: Iterable[bytes], blob: BlobCheck,
                    dest: str | os.PathLike[str], layer: str) -> UnpackResult:
    """Unpacks the layer from chunks into dest while blob checks (and maybe stores) them;
    verifies the blob's size and digest (InvalidArgument). Does not commit the blob."""
    reader = TeeReader(chunks, blob)
    try:
        result = unpack_layer(cast(BinaryIO, reader), dest, layer=layer)
    except InvalidArgument:
        # corrupt gzip/tar may just be the wrong bytes: say so if the digest shows it
        reader.drain()
        blob.verify()
        raise
    reader.drain()
    blob.verify()
    return result
