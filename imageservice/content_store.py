"""Blobs by digest under <images>/content/blobs/sha256/<hex>, written atomically.

``ingest(digest, size, chunks)`` streams bytes into ``<images>/ingest/<random>``,
hashing as they arrive; a wrong size or digest is refused; the file is fsynced
and renamed into place, so a blob that exists is always complete and verified.
``writer(digest, size)`` is the same in steps (write, verify, commit) for a caller that
also uses the bytes as they pass (a layer unpacked while it downloads, layer_stream.py);
``check(digest, size)`` verifies them the same way without storing them (a layer that is
not kept once unpacked).
Concurrent ingests of one digest share one download: the first caller writes,
the others wait for it (``SharedWork``, used by the image manager).
"""
from __future__ import annotations

import errno
import hashlib
import os
import shutil
import threading
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from pathlib import Path
from typing import TypeVar

from imageservice.reference import validate_digest
from pycri_common.errors import InvalidArgument, NotFound, ResourceExhausted
from pycri_common.fsutil import fsync_dir

T = TypeVar("T")

_HASHES = {"sha256": hashlib.sha256, "sha384": hashlib.sha384, "sha512": hashlib.sha512}


def disk_error(e: OSError, what: str) -> Exception:
    """ENOSPC/EDQUOT become ResourceExhausted; anything else is re-raised as is."""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return ResourceExhausted(f"no space left on the image filesystem while {what}")
    return e


class ContentStore:
    def __init__(self, root: Path) -> None:
        self.blobs_dir = root / "content" / "blobs"
        self.ingest_dir = root / "ingest"
        self.blobs_dir.mkdir(parents=True, exist_ok=True)
        self.ingest_dir.mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        algo, hexd = validate_digest(digest).split(":", 1)
        return self.blobs_dir / algo / hexd

    def exists(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def read(self, digest: str) -> bytes:
        try:
            return self.path(digest).read_bytes()
        except FileNotFoundError:
            raise NotFound(f"blob {digest} is not in the content store") from None

    def size(self, digest: str) -> int:
        try:
            return self.path(digest).stat().st_size
        except FileNotFoundError:
            return 0

    def write_bytes(self, digest: str, data: bytes) -> Path:
        return self.ingest(digest, len(data), [data])

    def ingest(self, digest: str, size: int | None, chunks: Iterable[bytes],
               progress: Callable[[int], None] | None = None) -> Path:
        """Stores the blob from chunks, verifying size (when known) and digest."""
        dest = self.path(digest)
        if dest.is_file():
            return dest
        with self.writer(digest, size, progress) as w:
            for chunk in chunks:
                w.write(chunk)
            return w.commit()

    def writer(self, digest: str, size: int | None,
               progress: Callable[[int], None] | None = None) -> BlobWriter:
        """A BlobWriter for digest (use it as a context manager: leaving the block without
        commit() removes the partial file)."""
        self.path(digest)   # validates the digest
        return BlobWriter(self, digest, size, progress)

    def check(self, digest: str, size: int | None,
              progress: Callable[[int], None] | None = None) -> BlobCheck:
        """A BlobCheck for digest: the blob's bytes are verified as they pass, not stored."""
        return BlobCheck(digest, size, progress)

    def delete(self, digest: str) -> None:
        try:
            self.path(digest).unlink()
        except FileNotFoundError:
            pass

    def all_digests(self) -> set[str]:
        out: set[str] = set()
        for algo_dir in self.blobs_dir.iterdir():
            if algo_dir.is_dir():
                out.update(f"{algo_dir.name}:{p.name}" for p in algo_dir.iterdir())
        return out

    def clean_ingest(self) -> None:
        """Removes half-written downloads (start-up recovery)."""
        shutil.rmtree(self.ingest_dir, ignore_errors=True)
        self.ingest_dir.mkdir(parents=True, exist_ok=True)

    def usage(self) -> tuple[int, int]:
        """(bytes, inodes) used by blobs."""
        total = inodes = 0
        for dirpath, dirnames, filenames in os.walk(self.blobs_dir):
            inodes += len(dirnames) + len(filenames)
            for fn in filenames:
                try:
                    total += os.lstat(os.path.join(dirpath, fn)).st_blocks * 512
                except FileNotFoundError:
                    pass
        return total, inodes


class BlobCheck:
    """Checks one blob as it passes without storing it: write() hashes and counts chunks
    (refusing more bytes than the descriptor's size at once), verify() checks size and
    digest. A layer that is unpacked while it downloads and not kept goes through one
    (layer_stream.py)."""

    def __init__(self, digest: str, size: int | None,
                 progress: Callable[[int], None] | None) -> None:
        self.digest = digest
        self.size = size
        algo, self._want = validate_digest(digest).split(":", 1)
        self._algo = algo
        self._hash = _HASHES[algo]()
        self._progress = progress
        self.written = 0

    def __enter__(self) -> BlobCheck:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Nothing to clean up (BlobWriter removes its partial file)."""

    def write(self, chunk: bytes) -> None:
        self.written += len(chunk)
        if self.size is not None and self.written > self.size:
            raise InvalidArgument(f"blob {self.digest} is larger than the {self.size} bytes "
                                  "its descriptor says")
        self._hash.update(chunk)
        self._store(chunk)
        if self._progress is not None:
            self._progress(len(chunk))

    def _store(self, chunk: bytes) -> None:
        """Where BlobWriter keeps the chunk."""

    def commit(self) -> Path | None:
        """Verifies the blob; nothing is stored (BlobWriter stores it and returns its path)."""
        self.verify()
        return None

    def verify(self) -> None:
        """InvalidArgument unless what was written has the descriptor's size and digest."""
        if self.size is not None and self.written != self.size:
            raise InvalidArgument(f"blob {self.digest}: got {self.written} bytes, descriptor "
                                  f"says {self.size}")
        got = self._hash.hexdigest()
        if got != self._want:
            raise InvalidArgument(f"blob content does not match its digest: expected "
                                  f"{self.digest}, got {self._algo}:{got}")


class BlobWriter(BlobCheck):
    """One blob being written into ``ingest/``: a BlobCheck that also appends the chunks to
    a partial file; commit() checks size and digest, fsyncs and renames the file into
    place; close() (or leaving the ``with`` block) removes the partial file when commit()
    did not happen."""

    def __init__(self, store: ContentStore, digest: str, size: int | None,
                 progress: Callable[[int], None] | None) -> None:
        super().__init__(digest, size, progress)
        self.dest = store.path(digest)
        self._tmp = store.ingest_dir / f"{self._algo}-{self._want[:16]}-{uuid.uuid4().hex[:8]}"
        try:
            self._file = open(self._tmp, "wb")  # noqa: SIM115 - closed by close()
        except OSError as e:
            raise disk_error(e, f"writing blob {digest}") from None

    def __enter__(self) -> BlobWriter:
        return self

    def _store(self, chunk: bytes) -> None:
        try:
            self._file.write(chunk)
        except OSError as e:
            raise disk_error(e, f"writing blob {self.digest}") from None

    def commit(self) -> Path:
        """Verifies the blob and moves it into the store (durably); returns its path."""
        self.verify()
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self.dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self._tmp, self.dest)
            fsync_dir(self.dest.parent)
        except OSError as e:
            raise disk_error(e, f"writing blob {self.digest}") from None
        return self.dest

    def close(self) -> None:
        try:
            self._file.close()   # flushes: may fail (ENOSPC) when a failure brought us here
        except OSError:
            pass
        try:
            self._tmp.unlink()
        except FileNotFoundError:
            pass


class SharedWork:
    """Runs work once per key while others asking for the same key wait for its result.

    ``run(key, fn)``: the first caller runs fn() in its own thread; callers that come
    while it runs get the same result (or exception). Nothing is cached afterwards.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[str, Future] = {}

    def run(self, key: str, fn: Callable[[], T],
            retry_on: tuple[type[BaseException], ...] = ()) -> T:
        """fn() once per key at a time; waiters get its result. A waiter whose owner failed
        with one of retry_on (e.g. the owner's client cancelled) runs fn itself."""
        while True:
            with self._lock:
                fut = self._running.get(key)
                owner = fut is None
                if owner:
                    fut = Future()
                    self._running[key] = fut
            assert fut is not None
            if owner:
                break
            try:
                return fut.result()  # type: ignore[no-any-return]
            except retry_on:
                continue
        try:
            result = fn()
        except BaseException as e:
            fut.set_exception(e)
            raise
        else:
            fut.set_result(result)
            return result
        finally:
            with self._lock:
                del self._running[key]

    def in_progress(self) -> int:
        with self._lock:
            return len(self._running)
