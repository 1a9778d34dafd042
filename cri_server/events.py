"""Container lifecycle events fanned out to GetContainerEvents subscribers.

Publishing never blocks: each subscriber has a bounded queue, and one that
falls too far behind (or is gone) is dropped with an error on its stream
instead of slowing RPCs or other subscribers. Events reach each subscriber in
publication order.
"""
from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

log = logging.getLogger(__name__)

QUEUE_LIMIT = 1000


class SubscriberTooSlow(Exception):
    pass


class Subscription:
    """Registered on creation; iterate it to receive events."""

    def __init__(self, bus: EventBus, is_active: Callable[[], bool], poll: float) -> None:
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=QUEUE_LIMIT)
        self.dropped = False
        self._bus = bus
        self._is_active = is_active
        self._poll = poll

    def __iter__(self) -> Iterator[Any]:
        try:
            while self._is_active() and not self._bus.closed:
                try:
                    event = self.queue.get(timeout=self._poll)
                except queue.Empty:
                    if self.dropped:
                        raise SubscriberTooSlow(
                            f"subscriber fell more than {QUEUE_LIMIT} events behind") from None
                    continue
                yield event
        finally:
            self.close()

    def close(self) -> None:
        self._bus._remove(self)


class EventBus:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: list[Subscription] = []
        self.closed = False

    def publish(self, event: Any) -> None:
        with self._lock:  # one publisher at a time keeps every subscriber's order identical
            for sub in list(self._subscribers):
                try:
                    sub.queue.put_nowait(event)
                except queue.Full:
                    sub.dropped = True
                    self._subscribers.remove(sub)
                    log.warning("dropping a GetContainerEvents subscriber %d events behind",
                                QUEUE_LIMIT)

    def subscriber_count(self) -> int:
        with self._lock:
            return len(self._subscribers)

    def subscribe(self, is_active: Callable[[], bool] = lambda: True,
                  poll: float = 0.5) -> Subscription:
        """A subscription that yields events until is_active() turns false or the bus closes."""
        sub = Subscription(self, is_active, poll)
        with self._lock:
            self._subscribers.append(sub)
        return sub

    def _remove(self, sub: Subscription) -> None:
        with self._lock:
            if sub in self._subscribers:
                self._subscribers.remove(sub)

    def close(self) -> None:
        self.closed = True


# Container lifecycle ranks: the CRI ContainerEventType values, in the order they happen.
CREATED, STARTED, STOPPED, DELETED = 0, 1, 2, 3


class LifecycleOrder:
    """Keeps each container's events in lifecycle order although several threads report them.

    A container that exits at once can be seen exiting (by the monitor, or by StartContainer
    itself) before StartContainer has reported STARTED; removing a running container reports
    DELETED without a STOPPED first. `plan` turns each report into the events to publish now:
    the missing steps before it (STARTED only for a container that did start), the event
    itself, or nothing for a report that comes late or twice. Containers with no history here
    (reported only after a daemon restart) get their events as reported. The caller holds one
    lock around plan + publish so that every subscriber sees the same order.
    """

    def __init__(self, remember: int = 10000) -> None:
        self.remember = remember
        self._last: dict[str, int] = {}   # insertion-ordered: the oldest are forgotten first

    def plan(self, container_id: str, event_type: int, started: bool) -> list[int]:
        last = self._last.get(container_id)
        if last is not None and event_type <= last:
            return []
        steps = [event_type]
        if last is not None:
            missing = range(last + 1, event_type)
            steps = [t for t in missing if t in (STARTED, STOPPED) and started] + steps
        self._last.pop(container_id, None)
        self._last[container_id] = event_type
        while len(self._last) > self.remember:
            del self._last[next(iter(self._last))]
        return steps
