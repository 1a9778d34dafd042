"""Single-use, expiring tokens for the URLs Exec/Attach/PortForward return.

A token is 128 random bits (secrets.token_urlsafe(16)). It is consumed by the first
request that presents it, whatever happens next; unknown, used or expired tokens are
refused (the server answers 404). The default lifetime is 60 s, the value kubelet's
and containerd's streaming servers use: enough for a client to connect right after
the RPC, short enough that a leaked URL is soon useless. At most `max_in_flight`
(1000, as kubelet) unused tokens exist at once; more is ResourceExhausted.
"""
from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from pycri_common.errors import ResourceExhausted

DEFAULT_TOKEN_TTL = 60.0
DEFAULT_MAX_IN_FLIGHT = 1000


@dataclass(frozen=True)
class PendingRequest:
    kind: str          # "exec" | "attach" | "portforward"
    request: object    # a copy of the CRI request message
    expires_at: float


class TokenStore:
    def __init__(self, ttl: float = DEFAULT_TOKEN_TTL,
                 max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if ttl <= 0:
            raise ValueError("token ttl must be positive")
        self.ttl = ttl
        self.max_in_flight = max_in_flight
        self._clock = clock
        self._lock = threading.Lock()
        self._pending: dict[str, PendingRequest] = {}

    def _purge(self, now: float) -> None:
        for token in [t for t, p in self._pending.items() if p.expires_at <= now]:
            del self._pending[token]

    def add(self, kind: str, request: object) -> str:
        now = self._clock()
        with self._lock:
            self._purge(now)
            if len(self._pending) >= self.max_in_flight:
                raise ResourceExhausted(
                    f"too many streaming requests waiting for a client "
                    f"({self.max_in_flight}); retry once some URLs were used or expired")
            token = secrets.token_urlsafe(16)
            self._pending[token] = PendingRequest(kind, request, now + self.ttl)
            return token

    def consume(self, token: str) -> PendingRequest | None:
        """The request behind a token, removing it; None if unknown, used or expired."""
        now = self._clock()
        with self._lock:
            pending = self._pending.pop(token, None)
            self._purge(now)
        if pending is None or pending.expires_at <= now:
            return None
        return pending

    def __len__(self) -> int:
        with self._lock:
            return len(self._pending)
