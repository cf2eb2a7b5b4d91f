"""One token bucket: at most `burst` tokens, refilled at `rate_per_s`, spent one call at a time.

Every rate limit of wxtoken spends from one of these: the upstream rate cap
(`producer.upstream.gate`), the per-requester allowances (`producer.limits.requesters`) and
the gateway's per-key limits (`ops.gateway._ratelimit`).

It never sleeps and never reads a clock: each call is told the time (`now_s`, read by its
owner from the owner's injected clock), so an owner of thousands of buckets reads its clock
once per decision and a test drives it with plain numbers. A bucket starts full; the first
call starts its refill. Time running backwards refills nothing, and tokens never go below
zero. Not thread-safe: its owners hold a lock or run on one event loop. Imports only the
standard library, so the gateway can use it without the producer's dependencies.
"""

from __future__ import annotations

import math


def _check(rate_per_s: float, burst: float) -> None:
    if not (rate_per_s > 0 and math.isfinite(rate_per_s)):
        raise ValueError(f"rate_per_s must be a positive number, not {rate_per_s!r}")
    if not (burst >= 1 and math.isfinite(burst)):
        raise ValueError(f"burst must be a number of at least 1, not {burst!r}")


class TokenBucket:
    """`try_take(now_s)` spends a token if one is there; `wait_s(now_s)` says how long until."""

    __slots__ = ("_at_s", "_burst", "_rate_per_s", "_tokens")

    def __init__(self, rate_per_s: float, burst: float) -> None:
        _check(rate_per_s, burst)
        self._rate_per_s = float(rate_per_s)
        self._burst = float(burst)
        self._tokens = self._burst
        self._at_s: float | None = None

    @property
    def rate_per_s(self) -> float:
        return self._rate_per_s

    @property
    def burst(self) -> float:
        return self._burst

    def tokens(self, now_s: float) -> float:
        """The tokens held at `now_s` (refilled up to then)."""
        self._refill(now_s)
        return self._tokens

    def try_take(self, now_s: float, n: float = 1.0) -> bool:
        """Spend `n` tokens and return True if they are there at `now_s`; else spend none."""
        self._check_n(n)
        self._refill(now_s)
        if self._tokens < n:
            return False
        self._tokens -= n
        return True

    def wait_s(self, now_s: float, n: float = 1.0) -> float:
        """Seconds from `now_s` until `n` tokens are there (0.0: they are); spends nothing."""
        self._check_n(n)
        self._refill(now_s)
        return max(0.0, (n - self._tokens) / self._rate_per_s)

    def retune(self, now_s: float, rate_per_s: float, burst: float) -> None:
        """A new rate and burst from `now_s` on: the time before is refilled at the old rate,
        and tokens above the new burst are dropped."""
        _check(rate_per_s, burst)
        if rate_per_s == self._rate_per_s and burst == self._burst:
            return
        self._refill(now_s)
        self._rate_per_s = float(rate_per_s)
        self._burst = float(burst)
        self._tokens = min(self._tokens, self._burst)

    def _refill(self, now_s: float) -> None:
        if self._at_s is not None and now_s > self._at_s:
            self._tokens = min(self._burst, self._tokens + (now_s - self._at_s) * self._rate_per_s)
        if self._at_s is None or now_s > self._at_s:
            self._at_s = now_s

    def _check_n(self, n: float) -> None:
        if not 0 < n <= self._burst:
            raise ValueError(f"cannot take {n!r} tokens from a bucket of {self._burst:g}")
