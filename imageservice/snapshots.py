"""Unpacked layers ("snapshots") under <images>/snapshots/<n>/fs, keyed by chain ID.

A snapshot holds one layer unpacked on its own (whiteouts in overlayfs form),
so an image's root filesystem is the overlay of its snapshots' ``fs`` dirs. The
short numeric directory names keep overlay mount options short. Snapshots are
shared by every image whose layer stack starts the same way (same chain ID).

Creation is atomic: the layer is unpacked into ``snapshots/tmp-<random>/fs``, then,
inside one sqlite transaction, a row is inserted and the directory renamed to
``snapshots/<row id>``. A crash leaves only a ``tmp-*`` directory or a numbered
directory without a row; ``recover()`` deletes both at start-up.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import stat
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from imageservice.content_store import disk_error
from imageservice.metadata import ImageDB


def chain_ids(diff_ids: list[str]) -> list[str]:
    """OCI chain IDs: ChainID(L0) = DiffID(L0); ChainID(Ln) = sha256(ChainID(Ln-1) + ' ' + DiffID(Ln))."""
    out: list[str] = []
    for d in diff_ids:
        if not out:
            out.append(d)
        else:
            out.append("sha256:" + hashlib.sha256(f"{out[-1]} {d}".encode()).hexdigest())
    return out


@dataclass(frozen=True)
class Snapshot:
    chain_id: str
    number: int
    path: Path        # .../snapshots/<n>/fs
    size: int
    inodes: int


def tree_usage(root: Path) -> tuple[int, int]:
    """(bytes in allocated blocks, inodes) of a directory tree; hard links counted once."""
    seen: set[int] = set()
    total = inodes = 0
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except FileNotFoundError:
                continue
            if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode):
                if st.st_ino in seen:
                    continue
                seen.add(st.st_ino)
            inodes += 1
            total += st.st_blocks * 512
    return total, inodes + 1


class SnapshotStore:
    def __init__(self, root: Path, db: ImageDB) -> None:
        self.dir = root / "snapshots"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.db = db

    def _path(self, number: int) -> Path:
        return self.dir / str(number) / "fs"

    def get(self, chain_id: str) -> Snapshot | None:
        row = self.db.snapshot(chain_id)
        if row is None:
            return None
        number, size, inodes = row
        return Snapshot(chain_id, number, self._path(number), size, inodes)

    def create(self, chain_id: str, parent: str, diff_id: str,
               fill: Callable[[Path], None]) -> Snapshot:
        """Runs fill(empty_dir) and makes the result the snapshot chain_id, atomically."""
        have = self.get(chain_id)
        if have is not None:
            return have
        tmp = self.dir / f"tmp-{uuid.uuid4().hex[:12]}"
        fs = tmp / "fs"
        try:
            fs.mkdir(parents=True)
            os.chmod(fs, 0o755)
            fill(fs)
            size, inodes = tree_usage(fs)
            with self.db.transaction() as cur:
                number = self.db.insert_snapshot(cur, chain_id, parent, diff_id, size, inodes)
                os.rename(tmp, self.dir / str(number))
            return Snapshot(chain_id, number, self._path(number), size, inodes)
        except OSError as e:
            raise disk_error(e, f"creating snapshot {chain_id}") from None
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    def remove(self, chain_id: str) -> None:
        snap = self.get(chain_id)
        if snap is None:
            return
        trash = self.dir / f"tmp-del-{snap.number}-{uuid.uuid4().hex[:6]}"
        src = self.dir / str(snap.number)
        try:
            os.rename(src, trash)
        except FileNotFoundError:
            trash = src
        with self.db.transaction() as cur:
            self.db.delete_snapshot(cur, chain_id)
        shutil.rmtree(trash, ignore_errors=True)

    def recover(self) -> None:
        """Start-up: removes tmp dirs, dirs without a row and rows without a dir."""
        known = {n: c for c, n in self.db.snapshot_numbers()}
        for entry in self.dir.iterdir():
            if entry.name.isdigit() and int(entry.name) in known:
                continue
            shutil.rmtree(entry, ignore_errors=True)
        for number, chain_id in known.items():
            if not self._path(number).is_dir():
                with self.db.transaction() as cur:
                    self.db.delete_snapshot(cur, chain_id)

    def usage(self) -> tuple[int, int]:
        return self.db.snapshot_usage()


def now_ns() -> int:
    return time.time_ns()
