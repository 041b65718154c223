"""Replay protection on the provider side: request ids seen within the acceptance window (pure).

The replay key is the ``X-Road-Request-Id`` that the client-side server generates and signs, not the
``X-Road-Id`` that a client system may reuse on a retry (docs/architecture.md section 4).
"""

from __future__ import annotations

import heapq
from datetime import datetime

from gateway.errors import ConfigError, ReplayCacheFull, ReplayedRequest


class ReplayCache:
    """Request ids seen within the acceptance window (pure; one per process, ``now`` passed in).

    A key stays until ``created + window_seconds``; ``window_seconds`` must be at least the allowed clock
    skew, so that a request still fresh enough to pass :func:`verify_request` cannot be replayed after its key
    has gone. When ``max_entries`` live keys are held the cache refuses new ones (fail closed) rather than
    forget.
    Several processes each have their own cache; the message log's uniqueness on the request id is the
    cross-process backstop.
    """

    __slots__ = ("_heap", "_seen", "max_entries", "window_seconds")

    def __init__(self, window_seconds: int, max_entries: int) -> None:
        if window_seconds <= 0 or max_entries <= 0:
            raise ConfigError("replay cache window and size must be positive")
        self.window_seconds = window_seconds
        self.max_entries = max_entries
        self._seen: dict[str, int] = {}
        self._heap: list[tuple[int, str]] = []

    def __len__(self) -> int:
        return len(self._seen)

    def _expire(self, ts: int) -> None:
        heap, seen = self._heap, self._seen
        while heap and heap[0][0] < ts:
            expiry, key = heapq.heappop(heap)
            if seen.get(key) == expiry:
                del seen[key]

    def check_and_add(self, key: str, created: int, now: datetime) -> None:
        """Remember ``key`` (an ``X-Road-Request-Id``) signed at ``created``; refuse one seen before.

        Raises:
            TrustError: ``ReplayedRequest`` for a key still in the window, or for a ``created`` already
                outside it; ``ReplayCacheFull`` when full (``Server.ServerProxy.*`` as the server proxy
                answers them: only the provider's side keeps a replay cache).
        """
        if now.tzinfo is None:
            raise ValueError("now must be an aware datetime")
        ts = int(now.timestamp())
        self._expire(ts)
        expiry = created + self.window_seconds
        if expiry < ts:
            raise ReplayedRequest(
                f"request signed at {created} is older than the {self.window_seconds} s replay window")
        if key in self._seen:
            raise ReplayedRequest(
                f"request id {key[:80]!r} was already received")
        if len(self._seen) >= self.max_entries:
            raise ReplayCacheFull(
                f"replay cache holds {self.max_entries} request ids; refusing new requests until some expire")
        self._seen[key] = expiry
        heapq.heappush(self._heap, (expiry, key))
