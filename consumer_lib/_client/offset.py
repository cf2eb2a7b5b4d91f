"""How far this host's clock is from the producer's, estimated from the messages it sends.

Every token message carries the producer's send time (`amqp.messages.SENT_MS_HEADER`, its
wall clock in ms). The header is not signed (the signed body stays the same bytes across
re-publishes) and any login that may write the tokens exchange can set it (`wxtoken-ops`
may, for overrides), so it is a hint that signed data bounds, never a fact:

- only a verified update with a new version, from the producer's refresh (never an
  override: it carries the operator's clock), gives a sample (`UpdateFeed.on_body`);
  garbage, re-publishes of what is held and replays give none;
- its send time must lie inside the update's signed life (`issued_at` to `expires_at`),
  else the header is ignored and counted (`invalid_headers`);
- one sample lowers the estimate by at most `MAX_DROP_S` (from 0 for the first): a lower
  offset makes held tokens look closer to their end, so this bounds what one forged or
  wrong header can take away; raising it is bounded by the signed `issued_at` (a sample
  is at most the update's age here), and after the first sample by `MAX_DROP_S` too;
- whatever the estimate, a pushed token is never held longer than its signed lifetime
  after it arrived here (`TokenCache`), so no header can make `get_token()` serve a token
  past its real expiry by more than the time it took to arrive.

Each sample is `receipt - sent` = offset + delay, where the delay (network, queueing, a
busy subscriber) is never negative: the smallest sample of a recent window is the best
estimate, NTP-style, and one delayed sample cannot raise it while a better one is in the
window.

`offset_s` is what to add to a producer time (`expires_at`) to get this host's time. It is 0
while the estimate is within `DEAD_BAND_S`, so a synced or single-host deployment behaves
exactly as before. The estimate errs only by the smallest delay in the window (it never
undershoots the true offset), so the local expiry is late by at most that delay: the
producer refreshes a fifth of a lifetime ahead, and the snapshot path does not use it at
all (it counts Redis's `PTTL` from the reply). The window is five minutes of local time
(`BUCKETS` of `BUCKET_S`), not a number of samples. After a failover to a producer with
another clock the estimate follows by at most `MAX_DROP_S` per new version. Most samples
cost one comparison; `offset_s` moves only by `MIN_CHANGE_S` or more.
"""

from __future__ import annotations

import collections
import logging
import math
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

#: Offsets within this band are taken as 0 (clocks in sync, or the same host).
DEAD_BAND_S = 1.0
#: An offset outside the dead band is applied this much smaller: the estimate is late by
#: the smallest delay in the window (milliseconds), so a token corrected for skew ends a
#: quarter second early rather than a few milliseconds late.
SAFETY_S = 0.25
#: An offset beyond this is reported once (WARNING) and shown in stats.
SKEW_WARN_S = 5.0
#: The window the minimum is taken over: `BUCKETS` buckets of `BUCKET_S` seconds of local
#: time, each keeping its smallest sample. Counted in time, not messages: re-publishes come
#: in bursts of hundreds, and a burst a busy subscriber reads late must not fill the window.
BUCKET_S = 10.0
BUCKETS = 30
#: `offset_s` moves only by at least this much (or to or from 0): each move recomputes the
#: local expiry of everything held.
MIN_CHANGE_S = 0.05
#: A snapshot TTL further than this from what `expires_at` says is no clock (a day).
ABSURD_S = 86_400.0
#: How far one sample may move the estimate (down from 0 for the first; either way after).
MAX_DROP_S = 60.0


class ClockOffset:
    """The windowed-minimum estimate of (our clock - the producer's clock)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        #: (bucket number, smallest sample in it), oldest first.
        self._buckets: collections.deque[tuple[int, float]] = collections.deque()
        #: Seconds to add to a producer time to get ours (read without a lock).
        self.offset_s = 0.0
        #: The raw estimate, dead band not applied (None before any sample).
        self.estimate_s: float | None = None
        self.invalid_headers = 0
        self._warned = False
        #: Called (no arguments, outside the lock) whenever `offset_s` changes.
        self.on_change: list[Callable[[], None]] = []

    def renew_lock(self) -> None:
        self._lock = threading.Lock()

    def sample(
        self, sent_s: float | None, received_s: float, *, issued_at_s: float, expires_at_s: float
    ) -> None:
        """One verified new update, signed as issued at `issued_at_s` and expiring at
        `expires_at_s`, sent at `sent_s` (producer clock, from the unsigned header; None:
        no header, an older producer or a test seam; NaN: garbage) and received at
        `received_s` (ours). Garbage, and a send time outside the signed life, are ignored
        and counted (`invalid_headers`); the sample is bounded by `MAX_DROP_S`."""
        if sent_s is None:
            return
        if not (math.isfinite(sent_s) and issued_at_s <= sent_s <= expires_at_s):
            with self._lock:
                self.invalid_headers += 1
            return
        bucket = math.floor(received_s / BUCKET_S)
        with self._lock:
            value = self._bounded(received_s - sent_s)
            buckets = self._buckets
            if buckets and buckets[-1][0] >= bucket:
                if value >= buckets[-1][1]:
                    return  # the window's minimum cannot change: the common case, O(1)
                buckets[-1] = (buckets[-1][0], value)
            else:
                buckets.append((bucket, value))
                while buckets[0][0] <= bucket - BUCKETS:
                    buckets.popleft()
            best = min(smallest for _, smallest in buckets)
            self.estimate_s = best
            before = self.offset_s
            wanted = 0.0 if abs(best) < DEAD_BAND_S else best - SAFETY_S
            changed = wanted != before and (
                wanted == 0.0 or before == 0.0 or abs(wanted - before) >= MIN_CHANGE_S
            )
            if changed:
                self.offset_s = wanted
            warn = abs(best) > SKEW_WARN_S
            first_warning = warn and not self._warned
            self._warned = warn
            count = len(buckets)
        if changed:
            for listener in list(self.on_change):
                listener()
        if first_warning:
            log.warning(
                "this host's clock is %+.1f s from the producer's (estimated over %d periods "
                "of 10 s): "
                "token expiry is corrected for it, but fix the clocks (NTP)",
                best,
                count,
            )

    def _bounded(self, value: float) -> float:
        """Under the lock: `value` moved at most `MAX_DROP_S` from the current estimate
        (only downwards from 0 before the first sample: raising it is bounded by the signed
        `issued_at`, and by the cache's cap of a lifetime from receipt)."""
        reference = self.estimate_s
        if reference is None:
            return max(value, -MAX_DROP_S)
        return min(max(value, reference - MAX_DROP_S), reference + MAX_DROP_S)

    def estimate_ms(self) -> int:
        """The estimate in ms for stats (0 before any sample)."""
        estimate = self.estimate_s
        return 0 if estimate is None else round(estimate * 1000)
