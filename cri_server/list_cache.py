"""ItemCache: List items (protobuf messages) by object id, each built once per version;
AnswerCache: the whole answer of an unfiltered List, kept while nothing in it changed.

A manager calls `changed(id)` whenever it writes an object (every change to what a List
shows is a write to the store) and `drop(id)` when the object goes; `item(id, obj)` builds
the item at most once per version. An item built while the object changed is not kept
(the version it was built for is already gone), so the cache never hands out an old one.
Each changed/drop also moves the cache's `generation`, which an AnswerCache follows.
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
        self.generation = 0   # moves with every changed() and drop()

    def changed(self, obj_id: str) -> None:
        with self._lock:
            self._versions[obj_id] = self._versions.get(obj_id, 0) + 1
            self._items.pop(obj_id, None)
            self.generation += 1

    def drop(self, obj_id: str) -> None:
        with self._lock:
            self._versions.pop(obj_id, None)
            self._items.pop(obj_id, None)
            self.generation += 1

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


class AnswerCache(Generic[M]):
    """The answer of an unfiltered List (the whole response message), handed out again while
    the generation it was built at holds: kubelet relists every second and most relists see
    no change, so they cost no building (copying 250 items into a response is ~0.4 ms).

    The List reads `generation()` before it looks at anything (`before`), brings its objects
    up to date (which may move the generation), then calls `answer(before, build)`: the
    cached answer is used only if the generation is still `before` and the answer was built
    at `before`; a new one is kept only if nothing changed while it was built. The answer is
    shared by concurrent calls: nobody may change it.
    """

    def __init__(self, generation: Callable[[], int]) -> None:
        self._generation = generation
        self._lock = threading.Lock()
        self._cached: tuple[int, M] | None = None

    def cached(self, before: int) -> M | None:
        """The answer built at generation `before`, if that is still the generation."""
        with self._lock:
            cached = self._cached
        if cached is not None and cached[0] == before == self._generation():
            return cached[1]
        return None

    def answer(self, before: int, build: Callable[[], M]) -> M:
        with self._lock:
            cached = self._cached
        if cached is not None and cached[0] == before == self._generation():
            return cached[1]
        built = build()
        if self._generation() == before:
            with self._lock:
                self._cached = (before, built)
        return built
