"""Per-key rate limiting: one `TokenBucket` per key name, told the time by an injected clock."""

from __future__ import annotations

import time
from collections.abc import Callable

from producer.limits.bucket import TokenBucket


class RateLimiter:
    """`allow(name, rate_per_s)` spends one request of `name`'s bucket.

    Each bucket holds up to twice the rate (at least one request) and refills at the rate;
    a key whose rate changes keeps its bucket, retuned. Returns 0.0 when allowed, else the
    seconds until one request is available again. Single-threaded use (the event loop);
    buckets of keys no longer used are dropped when there are more than `max_buckets`.
    """

    def __init__(
        self, *, clock: Callable[[], float] = time.monotonic, max_buckets: int = 10_000
    ) -> None:
        self._clock = clock
        self._max_buckets = max_buckets
        self._buckets: dict[str, TokenBucket] = {}

    def allow(self, name: str, rate_per_s: float) -> float:
        now_s = self._clock()
        burst = max(1.0, 2.0 * rate_per_s)
        bucket = self._buckets.get(name)
        if bucket is None:
            if len(self._buckets) >= self._max_buckets:
                self._buckets.clear()
            bucket = self._buckets[name] = TokenBucket(rate_per_s, burst)
        else:
            bucket.retune(now_s, rate_per_s, burst)
        return 0.0 if bucket.try_take(now_s) else bucket.wait_s(now_s)
