"""Keeps every List response within the message size CRI clients accept.

kubelet and crictl refuse a response over 16 MiB (their grpc max receive message size), so
the server's own send limit (64 MiB) is not what bounds a List: the client's is, and raising
ours would not help. The per-object limits (cri_server.labels) do not suffice either: one pod
item may carry 256 KiB of labels and 272 KiB of annotations, about 530 KiB, so 110 pods (the
kubelet default) could make a ListPodSandbox of 57 MiB and 250 pods one of 130 MiB.

So the daemon budgets what the Lists carry: the serialized PodSandbox items of all pods plus
the Container items of all containers may take LIST_BUDGET bytes together; a RunPodSandbox
or CreateContainer that would exceed it is refused (RESOURCE_EXHAUSTED). Every List carries
each item at most once (ListPodSandboxStats carries pods and containers, as attributes), plus
a few bytes of framing and, for the stats Lists, the numbers outside the attributes: under
1.5 KiB per item even with every number at its widest and 256-character strings
(tests/unit/test_list_budget.py measures it), 3.7 MiB for 250 pods with ten containers each.
11 MiB + 3.7 MiB stays under 16 MiB. A typical kubelet pod item takes 1-3 KiB and a container
item under 1 KiB (250 x 11 items: about 3 MiB), so normal use stays far from the budget.

Concurrent creates are counted while in flight, so they cannot overshoot the budget together.
"""
from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

from pycri_common.errors import InvalidArgument, ResourceExhausted

CLIENT_MAX_MESSAGE = 16 * 1024 * 1024
LIST_BUDGET = 11 * 1024 * 1024
MAX_ITEM = 1024 * 1024


class ListBudget:
    def __init__(self, used: Callable[[], int], limit: int = LIST_BUDGET) -> None:
        self._used = used          # bytes of the List items of every pod and container
        self.limit = limit
        self._lock = threading.Lock()
        self._inflight = 0

    @contextlib.contextmanager
    def admit(self, what: str, item_bytes: int) -> Iterator[None]:
        """Holds item_bytes of the budget while an object is being created (until it is in
        the store and so counted by `used`); raises when they do not fit."""
        if item_bytes > MAX_ITEM:
            raise InvalidArgument(f"{what}: its metadata, labels and annotations take "
                                  f"{item_bytes} bytes; at most {MAX_ITEM} are allowed")
        with self._lock:
            used = self._used() + self._inflight
            if used + item_bytes > self.limit:
                raise ResourceExhausted(
                    f"{what}: the pods and containers on this node already carry {used} bytes "
                    f"of metadata, labels and annotations; {item_bytes} more would exceed "
                    f"{self.limit}, and List responses would grow past the "
                    f"{CLIENT_MAX_MESSAGE} bytes CRI clients accept; remove pods or "
                    "containers, or use fewer labels and annotations")
            self._inflight += item_bytes
        try:
            yield
        finally:
            with self._lock:
                self._inflight -= item_bytes
