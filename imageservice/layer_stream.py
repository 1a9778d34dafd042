"""Unpacking a layer while it downloads: one pass over the bytes.

``unpack_download(chunks, writer, dest, layer)`` feeds the registry's chunks both to the
content store's BlobWriter (which hashes them and writes the blob's partial file) and to
the unpacker (which inflates and extracts the tar into ``dest`` and hashes the
uncompressed stream for the DiffID). When it returns, the whole blob has been read and
its size and digest checked; the caller then checks the DiffID and commits the blob and
the snapshot, in that order. Until then nothing is visible: the blob is a file in
``ingest/`` and the layer a ``snapshots/tmp-*`` dir, both removed by the caller's cleanup
on any failure and by start-up recovery after a crash.

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

from imageservice.content_store import BlobWriter
from imageservice.unpack import UnpackResult, unpack_layer
from pycri_common.errors import InvalidArgument


class TeeReader(io.RawIOBase):
    """A raw reader over an iterator of chunks; every chunk is written to writer first."""

    def __init__(self, chunks: Iterable[bytes], writer: BlobWriter) -> None:
        self._chunks: Iterator[bytes] = iter(chunks)
        self._writer = writer
        self._buf = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        if not self._buf:
            for chunk in self._chunks:
                if chunk:
                    self._writer.write(chunk)
                    self._buf = memoryview(chunk)
                    break
            else:
                return 0
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n

    def drain(self) -> None:
        """Reads (and writes) the rest of the chunks."""
        self._buf = memoryview(b"")
        for chunk in self._chunks:
            self._writer.write(chunk)


def unpack_download(chunks: Iterable[bytes], writer: BlobWriter,
                    dest: str | os.PathLike[str], layer: str) -> UnpackResult:
    """Unpacks the layer from chunks into dest while writer stores it; verifies the blob's
    size and digest (InvalidArgument). Does not commit the blob."""
    reader = TeeReader(chunks, writer)
    try:
        result = unpack_layer(cast(BinaryIO, reader), dest, layer=layer)
    except InvalidArgument:
        # corrupt gzip/tar may just be the wrong bytes: say so if the digest shows it
        reader.drain()
        writer.verify()
        raise
    reader.drain()
    writer.verify()
    return result
