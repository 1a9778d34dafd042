"""Blobs by digest under <images>/content/blobs/sha256/<hex>, written atomically.

``ingest(digest, size, chunks)`` streams bytes into ``<images>/ingest/<random>``,
hashing as they arrive; a wrong size or digest is refused; the file is fsynced
and renamed into place, so a blob that exists is always complete and verified.
Concurrent ingests of one digest share one download: the first caller writes,
the others wait for it (``BlobDownloads``).
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
        algo, want = digest.split(":", 1)
        h = _HASHES[algo]()
        tmp = self.ingest_dir / f"{algo}-{want[:16]}-{uuid.uuid4().hex[:8]}"
        n = 0
        try:
            with open(tmp, "wb") as f:
                for chunk in chunks:
                    n += len(chunk)
                    if size is not None and n > size:
                        raise InvalidArgument(f"blob {digest} is larger than the {size} bytes "
                                              "its descriptor says")
                    h.update(chunk)
                    f.write(chunk)
                    if progress is not None:
                        progress(len(chunk))
                f.flush()
                os.fsync(f.fileno())
            if size is not None and n != size:
                raise InvalidArgument(f"blob {digest}: got {n} bytes, descriptor says {size}")
            got = h.hexdigest()
            if got != want:
                raise InvalidArgument(f"blob content does not match its digest: expected "
                                      f"{digest}, got {algo}:{got}")
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, dest)
            fsync_dir(dest.parent)
            return dest
        except OSError as e:
            raise disk_error(e, f"writing blob {digest}") from None
        finally:
            try:
                tmp.unlink()
            except FileNotFoundError:
                pass

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
