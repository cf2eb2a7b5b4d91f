"""Upstream politeness shared by every app of a producer: a rate cap and a fleet-wide pause.

WeChat limits calls per app and, with errcode 45011, per minute across what a caller does.
The worker pool bounds how many calls are in flight (`WXTOKEN_UPSTREAM_CONCURRENCY`); this
module adds the rest:

- an optional rate cap (`WXTOKEN_UPSTREAM_RATE_PER_S`): a `TokenBucket` holding at most one
  second's worth of calls, so a fleet of 10,000 apps starting from empty Redis is fetched
  at that pace, not all at once;
- a fleet pause: a 45011 answer for any app pauses every fetch of this producer for
  `pause_s`, instead of the other apps running into the same wall one after the other.

`reserve(now_s)` is asked before every upstream call: 0.0 means "go" (a call is counted),
anything else is the number of seconds to wait first. It never blocks, so a waiting app
does not hold a worker. All time comes from the injected clock.
"""

from __future__ import annotations

import logging
import math
import threading

from producer.limits.bucket import TokenBucket

log = logging.getLogger(__name__)

#: WeChat's "api minute-quota reach limit": the whole fleet pauses.
MINUTE_LIMIT_ERRCODE = 45011


class UpstreamGate:
    """Token bucket plus fleet pause; thread-safe."""

    def __init__(self, *, rate_per_s: float | None = None, pause_s: float = 60.0) -> None:
        self._rate_per_s = rate_per_s
        self._bucket = None if rate_per_s is None else TokenBucket(rate_per_s, max(1.0, rate_per_s))
        self._pause_s = pause_s
        self._paused_until = -math.inf
        self._lock = threading.Lock()
        self.pauses = 0
        self.deferred = 0

    @property
    def rate_per_s(self) -> float | None:
        return self._rate_per_s

    def paused_until(self) -> float:
        return self._paused_until

    def reserve(self, now_s: float) -> float:
        """0.0 and one call counted when a call may go now, else the seconds to wait."""
        with self._lock:
            if now_s < self._paused_until:
                self.deferred += 1
                return self._paused_until - now_s
            if self._bucket is None or self._bucket.try_take(now_s):
                return 0.0
            self.deferred += 1
            return self._bucket.wait_s(now_s)

    def answered(self, errcode: int | None, now_s: float) -> None:
        """Tell the gate how a call ended; 45011 pauses the whole fleet."""
        if errcode != MINUTE_LIMIT_ERRCODE:
            return
        with self._lock:
            until = now_s + self._pause_s
            if until <= self._paused_until:
                return
            starting = now_s >= self._paused_until
            self._paused_until = until
            self.pauses += 1
        if starting:
            log.error(
                "upstream per-minute limit reached (errcode 45011): pausing every fetch of "
                "this producer for %.0f s",
                self._pause_s,
            )
