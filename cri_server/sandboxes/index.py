"""SandboxIndex: every pod's record in memory, as last written to the store, with its
PodSandbox list item built once per version of the record.

The manager writes the store and the index together (under `lock`), so a List answers from
here without a sqlite read, a JSON parse or a protobuf build per pod; a record that
changes (every change is a store write: create, each RunPodSandbox step, stop, NOTREADY,
remove) gets a new entry and so a new item. The index holds copies: callers go on
mutating their own records until their next save.
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

from cri_server.sandboxes.record import SandboxRecord
from proto import api_pb2


class _Entry:
    __slots__ = ("item", "rec")

    def __init__(self, rec: SandboxRecord) -> None:
        self.rec = rec
        self.item: api_pb2.PodSandbox | None = None


class SandboxIndex:
    def __init__(self, build_item: Callable[[SandboxRecord], api_pb2.PodSandbox]) -> None:
        self.lock = threading.RLock()
        self._build_item = build_item
        self._entries: dict[str, _Entry] = {}
        self.loaded = False
        self.generation = 0   # moves with every change of the entries (list_cache.AnswerCache)

    def load(self, records: Iterable[SandboxRecord]) -> None:
        with self.lock:
            self._entries = {r.id: _Entry(_copy(r)) for r in records}
            self.loaded = True
            self.generation += 1

    def put(self, rec: SandboxRecord) -> None:
        """rec as just written to the store (a copy is kept; its old item is dropped)."""
        with self.lock:
            self._entries[rec.id] = _Entry(_copy(rec))
            self.generation += 1

    def mark_notready(self, pod_id: str, ready: str, notready: str) -> None:
        """The index side of the store's compare-and-set of a READY pod's state."""
        with self.lock:
            entry = self._entries.get(pod_id)
            if entry is not None and entry.rec.state == ready:
                rec = _copy(entry.rec)
                rec.state = notready
                self._entries[pod_id] = _Entry(rec)
                self.generation += 1

    def drop(self, pod_id: str) -> None:
        with self.lock:
            self._entries.pop(pod_id, None)
            self.generation += 1

    def records(self) -> list[SandboxRecord]:
        """Every pod's record (shared copies: read them, do not change them)."""
        with self.lock:
            return [e.rec for e in self._entries.values()]

    def item(self, rec: SandboxRecord) -> api_pb2.PodSandbox:
        """The PodSandbox item of rec: cached while rec is the pod's current record."""
        with self.lock:
            entry = self._entries.get(rec.id)
            if entry is not None and entry.rec is rec:
                if entry.item is None:
                    entry.item = self._build_item(rec)
                return entry.item
        return self._build_item(rec)

    def __len__(self) -> int:
        return len(self._entries)


def _copy(rec: SandboxRecord) -> SandboxRecord:
    out = SandboxRecord.from_json(rec.to_json())
    out._config = rec._config  # the parsed config: never changed once the record exists
    return out
