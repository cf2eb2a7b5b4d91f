"""How far this producer's wall clock is from Redis's: checked with `TIME`, reported.

The producer's wall clock stamps every update (`issued_at`, `expires_at`) and the send
time of every message. Subscribers correct for a skewed producer clock (see
`consumer_lib._client.offset`), but a skew of more than a few seconds is a fault to fix (NTP):
`SkewMonitor.check()` (on lease ticks, at most every `CHECK_EVERY_S`) compares this clock
with Redis's, logs one WARNING when the skew goes past `WARN_S` (and one INFO when it is
back), exports it as a metric, and stores it for `wxtoken status`:

    {prefix}:clock_skew  hash: producer_id -> {"skew_s": 1.2, "at": 1795476981.0}

A skew is only claimed beyond the round trip's uncertainty (half of it).

An override is stamped with its issuer's clock (`issued_at`, `expires_at`), so `wxtoken
set` and the gateway measure theirs the same way (`check_issuer_clock`, through
`Issuer.new_override`) and refuse to issue beyond `ISSUE_MAX_SKEW_S` (`ClockSkewed`): a
laptop 8 h fast would otherwise make producers hold a 10-minute override for 8 h 10 min.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis

from consumer_lib.errors import WxTokenError
from consumer_lib.redis_errors import REDIS_ERRORS, describe_redis_error, translated
from consumer_lib.wire.keys import KeyLayout
from producer.leadership.clock import boottime

log = logging.getLogger(__name__)

#: A skew beyond this (seconds) is a WARNING, a metric and a line in `wxtoken status`.
WARN_S = 5.0
#: How often, at most, a producer asks Redis for its time.
CHECK_EVERY_S = 30.0
#: A reported skew larger than this is garbage, not a clock (a year).
ABSURD_S = 366 * 86_400.0
#: An override may be issued only by a clock within this of Redis's (past the uncertainty).
ISSUE_MAX_SKEW_S = 5.0


class ClockSkewed(WxTokenError):
    """This host's clock is too far from Redis's to stamp an override with it."""


def measure_skew(client: redis.Redis, clock: Callable[[], float]) -> tuple[float, float]:
    """(`clock` minus Redis's `TIME`, the uncertainty: half the round trip), in seconds;
    raises redis-py's errors."""
    before_s = clock()
    seconds, micros = client.time()
    after_s = clock()
    redis_s = float(seconds) + float(micros) / 1e6
    return (before_s + after_s) / 2 - redis_s, abs(after_s - before_s) / 2


def check_issuer_clock(
    client: redis.Redis,
    clock: Callable[[], float],
    *,
    who: str,
    max_skew_s: float = ISSUE_MAX_SKEW_S,
) -> float:
    """The skew of `who`'s `clock` from Redis's; `ClockSkewed` beyond `max_skew_s` (past
    the round trip's uncertainty), `StoreError` when Redis cannot say."""
    with translated("reading Redis's clock", client):
        skew_s, uncertainty_s = measure_skew(client, clock)
    if not math.isfinite(skew_s) or abs(skew_s) - uncertainty_s > max_skew_s:
        raise ClockSkewed(
            f"{who}'s clock is {skew_s:+.1f} s from Redis's (more than {max_skew_s:g} s): "
            "an override would live by the wrong clock; fix this host's clock (NTP)"
        )
    return skew_s


@dataclass(frozen=True)
class SkewReport:
    """One producer's last measurement, as `wxtoken status` reads it."""

    producer_id: str
    skew_s: float
    at: float


class SkewMonitor:
    """Measures (this clock - Redis's clock) and reports a skew past `WARN_S`."""

    def __init__(
        self,
        client: redis.Redis,
        keys: KeyLayout,
        *,
        producer_id: str,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = boottime,
        every_s: float = CHECK_EVERY_S,
        warn_s: float = WARN_S,
    ) -> None:
        self._client = client
        self._keys = keys
        self._producer_id = producer_id
        self._clock = clock
        self._monotonic = monotonic
        self._every_s = every_s
        self._warn_s = warn_s
        self._next_check = -math.inf
        self._warned = False
        #: The last measured skew (seconds, this clock minus Redis's); None before one.
        self.skew_s: float | None = None

    def check(self) -> float | None:
        """Measure now unless measured within `every_s`; the last skew. Never raises."""
        now_m = self._monotonic()
        if now_m < self._next_check:
            return self.skew_s
        self._next_check = now_m + self._every_s
        try:
            skew_s, uncertainty_s = measure_skew(self._client, self._clock)
        except REDIS_ERRORS as exc:
            log.debug("could not read Redis's clock: %s", describe_redis_error(exc))
            return self.skew_s
        self.skew_s = skew_s
        self._report(skew_s, uncertainty_s, self._clock())
        return skew_s

    def _report(self, skew_s: float, uncertainty_s: float, now_s: float) -> None:
        skewed = abs(skew_s) - uncertainty_s > self._warn_s
        if skewed and not self._warned:
            log.warning(
                "this producer's clock is %+.1f s from Redis's: fix the clocks (NTP); "
                "subscribers correct token expiry for it meanwhile",
                skew_s,
            )
        elif self._warned and not skewed:
            log.info("this producer's clock is back within %g s of Redis's", self._warn_s)
        self._warned = skewed
        value = json.dumps({"skew_s": round(skew_s, 3), "at": now_s})
        try:
            self._client.hset(self._keys.clock_skew, self._producer_id, value)
        except REDIS_ERRORS as exc:
            log.debug("could not store the clock skew: %s", describe_redis_error(exc))


def read_skews(client: redis.Redis, keys: KeyLayout) -> list[SkewReport]:
    """Every producer's last measurement, by producer id; garbage entries are skipped.
    `StoreError` when Redis is away."""
    with translated("reading clock skews", client):
        entries = client.hgetall(keys.clock_skew)
    found = []
    for raw_id, raw in entries.items():
        try:
            producer_id = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
            data = json.loads(raw)
            skew_s, at = float(data["skew_s"]), float(data["at"])
        except (ValueError, TypeError, KeyError, UnicodeDecodeError, RecursionError):
            continue
        if not (math.isfinite(skew_s) and math.isfinite(at)) or abs(skew_s) > ABSURD_S:
            continue
        found.append(SkewReport(producer_id[:128], skew_s, at))
    return sorted(found, key=lambda report: report.producer_id)
