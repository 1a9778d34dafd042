from __future__ import annotations

import threading

import pytest

from cri_server import events
from cri_server.events import EventBus, SubscriberTooSlow


def _drain(sub, out: list[int], last: int) -> None:  # type: ignore[no-untyped-def]
    for ev in sub:
        out.append(ev)
        if ev == last:
            return


def test_every_subscriber_gets_every_event_in_order() -> None:
    bus = EventBus()
    seen: list[list[int]] = [[], []]
    threads = [threading.Thread(target=_drain, args=(bus.subscribe(poll=0.01), seen[i], 99))
               for i in range(2)]
    for t in threads:
        t.start()
    for i in range(100):
        bus.publish(i)
    for t in threads:
        t.join(5)
    assert seen[0] == list(range(100)) == seen[1]
    assert bus.subscriber_count() == 0  # finished iterations unsubscribe


def test_slow_subscriber_is_dropped_and_never_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(events, "QUEUE_LIMIT", 5)
    bus = EventBus()
    slow = bus.subscribe(poll=0.01)  # never read while publishing
    fast_seen: list[int] = []
    fast = threading.Thread(target=_drain, args=(bus.subscribe(poll=0.01), fast_seen, 19))
    fast.start()
    for i in range(20):  # the slow one never reads; publishing must not block on it
        bus.publish(i)
        while len(fast_seen) <= i and fast.is_alive():
            threading.Event().wait(0.001)
    fast.join(5)
    assert fast_seen == list(range(20))
    got = []
    with pytest.raises(SubscriberTooSlow):
        for ev in slow:
            got.append(ev)
    assert got == [0, 1, 2, 3, 4]


def test_inactive_subscriber_stops() -> None:
    bus = EventBus()
    active = [True]
    sub = bus.subscribe(is_active=lambda: active[0], poll=0.01)
    active[0] = False
    assert list(sub) == [] and bus.subscriber_count() == 0
