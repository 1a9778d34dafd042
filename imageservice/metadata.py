"""Image metadata in sqlite (<images>/images.db): images, their names, blobs, layers, snapshots.

Tables:
  images(id = config digest, manifest_digest, config (JSON bytes), chain_id, size,
         pinned, annotations (JSON), runtime_handler, created_at)
  image_names(name PRIMARY KEY, image_id, kind 'tag'|'digest')  -- a name points at one image
  image_blobs(image_id, digest)      -- every blob the image keeps alive (index, manifest,
                                        config, layers)
  image_layers(image_id, idx, chain_id)
  snapshots(number, chain_id UNIQUE, parent, diff_id, size, inodes, created_at)

Every change is one transaction (WAL journal, synchronous=FULL), so a kill -9
leaves the previous or the next state. One connection is shared by all threads
behind a lock (sqlite work here is tiny next to downloads and unpacking).
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    id TEXT PRIMARY KEY,
    manifest_digest TEXT NOT NULL,
    config BLOB NOT NULL,
    chain_id TEXT NOT NULL,
    size INTEGER NOT NULL,
    pinned INTEGER NOT NULL DEFAULT 0,
    annotations TEXT NOT NULL DEFAULT '{}',
    runtime_handler TEXT NOT NULL DEFAULT '',
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS image_names (
    name TEXT PRIMARY KEY,
    image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    kind TEXT NOT NULL CHECK (kind IN ('tag', 'digest'))
);
CREATE INDEX IF NOT EXISTS image_names_by_image ON image_names(image_id);
CREATE TABLE IF NOT EXISTS image_blobs (
    image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    digest TEXT NOT NULL,
    PRIMARY KEY (image_id, digest)
);
CREATE TABLE IF NOT EXISTS image_layers (
    image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    idx INTEGER NOT NULL,
    chain_id TEXT NOT NULL,
    PRIMARY KEY (image_id, idx)
);
CREATE TABLE IF NOT EXISTS snapshots (
    number INTEGER PRIMARY KEY AUTOINCREMENT,
    chain_id TEXT NOT NULL UNIQUE,
    parent TEXT NOT NULL,
    diff_id TEXT NOT NULL,
    size INTEGER NOT NULL,
    inodes INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);
"""


@dataclass
class ImageRecord:
    """One image as stored; `config` is the raw image config JSON (OCI image-spec)."""

    id: str
    manifest_digest: str
    config: bytes
    chain_id: str
    size: int
    pinned: bool
    annotations: dict[str, str]
    runtime_handler: str
    created_at: int
    repo_tags: list[str] = field(default_factory=list)
    repo_digests: list[str] = field(default_factory=list)
    layers: list[str] = field(default_factory=list)     # chain IDs, bottom first


class ImageDB:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.RLock()
        self.conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None,
                                    timeout=30.0)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.execute("PRAGMA foreign_keys=ON")
        with self.transaction() as cur:
            for stmt in SCHEMA.split(";"):
                if stmt.strip():
                    cur.execute(stmt)

    def close(self) -> None:
        with self._lock:
            self.conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Cursor]:
        with self._lock:
            cur = self.conn.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                yield cur
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            else:
                cur.execute("COMMIT")
            finally:
                cur.close()

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self.conn.execute(sql, args).fetchall()

    # -- snapshots ----------------------------------------------------------
    def snapshot(self, chain_id: str) -> tuple[int, int, int] | None:
        rows = self._query("SELECT number, size, inodes FROM snapshots WHERE chain_id = ?",
                           (chain_id,))
        return rows[0] if rows else None  # type: ignore[return-value]

    def insert_snapshot(self, cur: sqlite3.Cursor, chain_id: str, parent: str, diff_id: str,
                        size: int, inodes: int) -> int:
        cur.execute("INSERT INTO snapshots (chain_id, parent, diff_id, size, inodes, created_at)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (chain_id, parent, diff_id, size, inodes, time.time_ns()))
        return int(cur.lastrowid or 0)

    def delete_snapshot(self, cur: sqlite3.Cursor, chain_id: str) -> None:
        cur.execute("DELETE FROM snapshots WHERE chain_id = ?", (chain_id,))

    def snapshot_numbers(self) -> list[tuple[str, int]]:
        return [(c, n) for c, n in self._query("SELECT chain_id, number FROM snapshots")]

    def snapshot_usage(self) -> tuple[int, int]:
        (size, inodes), = self._query(
            "SELECT COALESCE(SUM(size), 0), COALESCE(SUM(inodes), 0) FROM snapshots")
        return int(size), int(inodes)

    def referenced_chain_ids(self) -> set[str]:
        return {r[0] for r in self._query("SELECT DISTINCT chain_id FROM image_layers")}

    def referenced_blobs(self) -> set[str]:
        return {r[0] for r in self._query("SELECT DISTINCT digest FROM image_blobs")}

    # -- images -------------------------------------------------------------
    def put_image(self, rec: ImageRecord, names: list[tuple[str, str]], blobs: list[str]) -> None:
        """Inserts or updates the image and points each (name, kind) at it, in one transaction."""
        with self.transaction() as cur:
            cur.execute(
                "INSERT INTO images (id, manifest_digest, config, chain_id, size, pinned,"
                " annotations, runtime_handler, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT(id) DO UPDATE SET pinned = MAX(pinned, excluded.pinned),"
                " annotations = excluded.annotations",
                (rec.id, rec.manifest_digest, rec.config, rec.chain_id, rec.size,
                 int(rec.pinned), json.dumps(rec.annotations, sort_keys=True),
                 rec.runtime_handler, rec.created_at))
            for d in blobs:
                cur.execute("INSERT OR IGNORE INTO image_blobs (image_id, digest) VALUES (?, ?)",
                            (rec.id, d))
            for i, c in enumerate(rec.layers):
                cur.execute("INSERT OR IGNORE INTO image_layers (image_id, idx, chain_id)"
                            " VALUES (?, ?, ?)", (rec.id, i, c))
            for name, kind in names:
                cur.execute("INSERT INTO image_names (name, image_id, kind) VALUES (?, ?, ?)"
                            " ON CONFLICT(name) DO UPDATE SET image_id = excluded.image_id,"
                            " kind = excluded.kind", (name, rec.id, kind))

    def delete_image(self, image_id: str) -> bool:
        with self.transaction() as cur:
            cur.execute("DELETE FROM images WHERE id = ?", (image_id,))
            return cur.rowcount > 0

    def set_pinned(self, image_id: str, pinned: bool) -> None:
        with self.transaction() as cur:
            cur.execute("UPDATE images SET pinned = ? WHERE id = ?", (int(pinned), image_id))

    def _record(self, row: tuple[Any, ...]) -> ImageRecord:
        rec = ImageRecord(row[0], row[1], bytes(row[2]), row[3], int(row[4]), bool(row[5]),
                          json.loads(row[6]), row[7], int(row[8]))
        for name, kind in self._query(
                "SELECT name, kind FROM image_names WHERE image_id = ? ORDER BY name", (rec.id,)):
            (rec.repo_tags if kind == "tag" else rec.repo_digests).append(name)
        rec.layers = [r[0] for r in self._query(
            "SELECT chain_id FROM image_layers WHERE image_id = ? ORDER BY idx", (rec.id,))]
        return rec

    _COLS = ("id, manifest_digest, config, chain_id, size, pinned, annotations,"
             " runtime_handler, created_at")

    def image(self, image_id: str) -> ImageRecord | None:
        with self._lock:
            rows = self._query(f"SELECT {self._COLS} FROM images WHERE id = ?", (image_id,))
            return self._record(rows[0]) if rows else None

    def image_by_name(self, name: str) -> ImageRecord | None:
        with self._lock:
            rows = self._query(f"SELECT {self._COLS} FROM images WHERE id = "
                               "(SELECT image_id FROM image_names WHERE name = ?)", (name,))
            return self._record(rows[0]) if rows else None

    def image_ids_with_prefix(self, hex_prefix: str) -> list[str]:
        pattern = "sha256:" + hex_prefix.replace("%", "").replace("_", "") + "%"
        return [r[0] for r in self._query("SELECT id FROM images WHERE id LIKE ?", (pattern,))]

    def images(self) -> list[ImageRecord]:
        with self._lock:
            return [self._record(r) for r in self._query(
                f"SELECT {self._COLS} FROM images ORDER BY created_at, id")]

    def image_blobs(self, image_id: str) -> list[str]:
        return [r[0] for r in self._query(
            "SELECT digest FROM image_blobs WHERE image_id = ?", (image_id,))]
