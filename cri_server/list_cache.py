"""ItemCache: List items (protobuf messages) by object id, each built once per version.

A manager calls `changed(id)` whenever it writes an object (every change to what a List
shows is a write to the store) and `drop(id)` when the object goes; `item(id, obj)` builds
the item at most once per version. An item built while the object changed is not kept
(the version it was built for is already gone), so the cache never hands out an old one.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")
M = TypeVar("M")


class ItemCache(Generic[T, M]):
    def __init__(self, build: Callable[[T], M]) -> None:
        self._build = build
        self._lock = threading.Lock()
        self._versions: dict[str, int] = {}
        self._items: dict[str, tuple[int, M]] = {}

    def changed(self, obj_id: str) -> None:
        with self._lock:
            self._versions[obj_id] = self._versions.get(obj_id, 0) + 1
            self._items.pop(obj_id, None)

    def drop(self, obj_id: str) -> None:
        with self._lock:
            self._versions.pop(obj_id, None)
            self._items.pop(obj_id, None)

    def item(self, obj_id: str, obj: T) -> M:
        with self._lock:
            version = self._versions.get(obj_id, 0)
            cached = self._items.get(obj_id)
            if cached is not None and cached[0] == version:
                return cached[1]
        built = self._build(obj)
        with self._lock:
            if self._versions.get(obj_id, 0) == version:
                self._items[obj_id] = (version, built)
        return built

    def __len__(self) -> int:
        return len(self._items)
