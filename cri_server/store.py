"""sqlite-backed metadata for pods and containers (root/runtime.db).

One table holds every object as JSON, keyed by (kind, id), with a unique
name key per kind (the CRI "name is reserved" rule: one live pod per
namespace/name/uid/attempt, one container per pod/name/attempt). Every write
is its own transaction; WAL mode keeps readers off writers' backs. The daemon
can be killed at any point and finds either the old or the new record.

Domain managers (sandboxes, containers) keep their records as dataclasses and
use `to_json`/`from_json` on the way in and out.
"""
from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pycri_common.errors import AlreadyExists

SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    kind     TEXT NOT NULL,
    id       TEXT NOT NULL,
    name_key TEXT,
    data     TEXT NOT NULL,
    PRIMARY KEY (kind, id)
);
CREATE UNIQUE INDEX IF NOT EXISTS objects_name ON objects (kind, name_key)
    WHERE name_key IS NOT NULL;
"""


class Store:
    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path
        self._local = threading.local()
        self._conn().executescript(SCHEMA)

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.db_path, timeout=30, isolation_level=None,
                                   check_same_thread=True)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
        return conn

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    # -- writes --------------------------------------------------------------
    def insert(self, kind: str, obj_id: str, name_key: str | None,
               data: dict[str, Any] | str) -> None:
        """Adds a new object (data: a JSON object, or its text); AlreadyExists if the id or
        the name key is taken."""
        try:
            with self._tx() as db:
                db.execute("INSERT INTO objects (kind, id, name_key, data) VALUES (?, ?, ?, ?)",
                           (kind, obj_id, name_key, _text(data)))
        except sqlite3.IntegrityError:
            holder = self.find_by_name(kind, name_key) if name_key else None
            if holder is not None:
                raise AlreadyExists(f"{kind} name {name_key!r} is reserved by {holder['id']}") from None
            raise AlreadyExists(f"{kind} id {obj_id!r} already exists") from None

    def update(self, kind: str, obj_id: str, data: dict[str, Any] | str) -> None:
        """data: a JSON object, or its text."""
        with self._tx() as db:
            db.execute("UPDATE objects SET data = ? WHERE kind = ? AND id = ?",
                       (_text(data), kind, obj_id))

    def replace_field(self, kind: str, obj_id: str, field: str, expected: str, new: str) -> bool:
        """Sets a top-level string field to `new` only if it still holds `expected` (a
        compare-and-set that leaves the other fields as they are); True if it did."""
        path = "$." + field
        with self._tx() as db:
            cur = db.execute("UPDATE objects SET data = json_set(data, ?, ?) WHERE kind = ? AND "
                             "id = ? AND json_extract(data, ?) = ?",
                             (path, new, kind, obj_id, path, expected))
            return cur.rowcount == 1

    def release_name(self, kind: str, obj_id: str) -> None:
        """Frees the name key (e.g. once a pod is removed from kubelet's view)."""
        with self._tx() as db:
            db.execute("UPDATE objects SET name_key = NULL WHERE kind = ? AND id = ?", (kind, obj_id))

    def delete(self, kind: str, obj_id: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM objects WHERE kind = ? AND id = ?", (kind, obj_id))

    # -- reads ---------------------------------------------------------------
    def get(self, kind: str, obj_id: str) -> dict[str, Any] | None:
        row = self._conn().execute("SELECT data FROM objects WHERE kind = ? AND id = ?",
                                   (kind, obj_id)).fetchone()
        return json.loads(row[0]) if row else None

    def find_by_name(self, kind: str, name_key: str) -> dict[str, Any] | None:
        row = self._conn().execute("SELECT data FROM objects WHERE kind = ? AND name_key = ?",
                                   (kind, name_key)).fetchone()
        return json.loads(row[0]) if row else None

    def ids_with_prefix(self, kind: str, prefix: str) -> list[str]:
        rows = self._conn().execute(
            "SELECT id FROM objects WHERE kind = ? AND id >= ? AND id < ?",
            (kind, prefix, prefix + "\uffff")).fetchall()
        return [r[0] for r in rows]

    def list(self, kind: str) -> list[dict[str, Any]]:
        rows = self._conn().execute("SELECT data FROM objects WHERE kind = ? ORDER BY id",
                                    (kind,)).fetchall()
        return [json.loads(r[0]) for r in rows]


def _text(data: dict[str, Any] | str) -> str:
    return data if isinstance(data, str) else json.dumps(data)
