"""Per-key rate limiting: one token bucket per key name, refilled from an injected clock."""

from __future__ import annotations

import time
from collections.abc import Callable


class RateLimiter:
    """`allow(name, rate_per_s)` spends one request of `name`'s bucket.

    Each bucket holds up to twice the rate (at least one request) and refills at the rate.
    Returns 0.0 when allowed, else the seconds until one request is available again.
    Single-threaded use (the event loop); buckets of keys no longer used are dropped when
    there are more than `max_buckets`.
    """

    def __init__(
        self, *, clock: Callable[[], float] = time.monotonic, max_buckets: int = 10_000
    ) -> None:
        self._clock = clock
        self._max_buckets = max_buckets
        #: name -> (tokens left, when they were counted)
        self._buckets: dict[str, tuple[float, float]] = {}

    def allow(self, name: str, rate_per_s: float) -> float:
        now = self._clock()
        capacity = max(1.0, 2.0 * rate_per_s)
        held = self._buckets.get(name)
        if held is None:
            if len(self._buckets) >= self._max_buckets:
                self._buckets.clear()
            tokens = capacity
        else:
            tokens = min(capacity, held[0] + (now - held[1]) * rate_per_s)
        if tokens >= 1.0:
            self._buckets[name] = (tokens - 1.0, now)
            return 0.0
        self._buckets[name] = (tokens, now)
        return (1.0 - tokens) / rate_per_s
