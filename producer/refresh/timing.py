"""When a credential is refreshed, re-published and retried: pure arithmetic on seconds.

- A token is replaced when `margin_s` of its life is left: `margin_ratio` of its lifetime,
  at most `margin_max_s` (WeChat renews stable tokens, and keeps a replaced classic token
  usable, only in the last 300 s).
- Re-publishing runs every `republish_interval_s`, each credential at its own phase of the
  interval (`republish_phase_s`, from a hash of the app id, the same on every producer), so
  a fleet of 10,000 apps sends a steady trickle instead of 10,000 messages at once.
- Upstream failures back off by kind (`Retries`): transient ones from `retry_base_s`
  doubling to `retry_cap_s`, configuration ones every `config_retry_s` (jittered), quota
  ones from `quota_retry_base_s` doubling to `quota_retry_cap_s`. Two rules bound that:
  while a valid token is held, no transient or configuration retry is scheduled past its
  expiry (at most half the time it has left, at least `retry_base_s` unless less is left),
  so one failed call at the refresh point never costs the token (a spent quota keeps its
  hard backoff: it does not come back within minutes); once nothing valid is held, every service is
  failing, and transient failures back off to `expired_retry_s` at most (jittered) until
  upstream answers (configuration and quota failures keep their slow pace).
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

from consumer_lib.backoff import Backoff
from consumer_lib.wire.update import TokenUpdate
from producer.settings import ProducerSettings
from producer.upstream.errcodes import FailureKind
from producer.upstream.wechat import UpstreamError

log = logging.getLogger(__name__)

#: Never busy-loop: the shortest wait a step asks for.
MIN_WAIT_S = 0.05


#: A healthy leader's trusted lease never drops below about 0.47 of its TTL (trusted for 0.8
#: of it, renewed every third): asking for at most 0.4 of it never stalls a healthy leader.
LEASE_CALL_SHARE = 0.4


@dataclass(frozen=True)
class RefreshTiming:
    """When to refresh, re-publish and retry; all in seconds."""

    margin_ratio: float = 0.2
    margin_max_s: float = 300.0
    republish_interval_s: float = 60.0
    retry_base_s: float = 1.0
    retry_cap_s: float = 60.0
    config_retry_s: float = 300.0
    quota_retry_base_s: float = 60.0
    quota_retry_cap_s: float = 3600.0
    #: With nothing valid held, transient failures retry after [1/2, 1] of this.
    expired_retry_s: float = 3.0
    store_retry_s: float = 2.0
    #: How long a takeover may take (the lease TTL): a margin shorter than this lets a
    #: token lapse when the leader dies just before its refresh point.
    takeover_s: float = 0.0
    #: The longest an upstream call may take (connect plus read timeout): right before one,
    #: the lease must have that much trusted life left, capped at `LEASE_CALL_SHARE` of the
    #: lease TTL (a longer call is covered by the write fence). 0: no such check.
    upstream_call_s: float = 0.0

    @classmethod
    def from_settings(cls, settings: ProducerSettings) -> RefreshTiming:
        return cls(
            margin_ratio=settings.refresh_margin_ratio,
            margin_max_s=settings.refresh_margin_max_s,
            republish_interval_s=settings.republish_interval_s,
            retry_base_s=settings.retry_base_s,
            retry_cap_s=settings.retry_cap_s,
            config_retry_s=settings.config_retry_s,
            quota_retry_base_s=settings.quota_retry_base_s,
            quota_retry_cap_s=settings.quota_retry_cap_s,
            takeover_s=settings.lease_ttl_s,
            upstream_call_s=settings.http_connect_timeout_s + settings.http_read_timeout_s,
        )

    def lease_needed_s(self) -> float:
        """How much trusted lease must be left for an upstream call to start now."""
        if self.takeover_s <= 0:
            return self.upstream_call_s
        return min(self.upstream_call_s, self.takeover_s * LEASE_CALL_SHARE)

    def margin_s(self, update: TokenUpdate) -> float:
        lifetime_s = update.expires_at - update.issued_at
        return min(self.margin_max_s, lifetime_s * self.margin_ratio)

    def refresh_at(self, update: TokenUpdate) -> float:
        """The moment `update` should be replaced."""
        return update.expires_at - self.margin_s(update)

    def next_republish_at(self, now_s: float, phase_s: float | None) -> float:
        """The next re-publish after one at `now_s`: a whole interval later without a phase,
        else the credential's next slot (`phase_s` modulo the interval) after `now_s`."""
        interval_s = self.republish_interval_s
        if phase_s is None:
            return now_s + interval_s
        into_s = (now_s - phase_s) % interval_s
        gap_s = interval_s - into_s
        if gap_s < interval_s / 2:  # never twice within half an interval
            gap_s += interval_s
        return now_s + gap_s


#: Re-publish phases are whole multiples of this: the credentials of one slot are due at
#: the same moment, so the scheduler, the workers and the publisher thread each wake once
#: per slot (a batch) rather than once per message.
REPUBLISH_SLOT_S = 1.0


def republish_phase_s(app_id: str, kind: str, interval_s: float) -> float:
    """A stable offset in [0, interval_s) for one credential, the same on every producer,
    on a `REPUBLISH_SLOT_S` boundary (when the interval holds more than one slot)."""
    digest = hashlib.blake2b(f"{app_id}:{kind}".encode(), digest_size=8).digest()
    phase_s = int.from_bytes(digest, "big") / 2**64 * interval_s
    if interval_s < 2 * REPUBLISH_SLOT_S:
        return phase_s
    return math.floor(phase_s / REPUBLISH_SLOT_S) * REPUBLISH_SLOT_S


class Retries:
    """How long one credential waits after an upstream failure, by kind; logs each one."""

    __slots__ = ("_app_id", "_rand", "_timing", "failing", "quota", "transient")

    def __init__(self, timing: RefreshTiming, *, rand: Callable[[], float], app_id: str) -> None:
        self._timing = timing
        self._rand = rand
        self._app_id = app_id
        self.transient = Backoff(timing.retry_base_s, timing.retry_cap_s, rand=rand)
        self.quota = Backoff(timing.quota_retry_base_s, timing.quota_retry_cap_s, rand=rand)
        #: The last fetch failed (set by `after_failure`, cleared by `reset`).
        self.failing = False

    def reset(self) -> None:
        self.transient.reset()
        self.quota.reset()
        self.failing = False

    def after_failure(
        self, exc: UpstreamError, *, now_s: float, valid_until_s: float | None
    ) -> float:
        """The wait after `exc` at `now_s`, logged in one line naming the app and the reason;
        `valid_until_s`: the expiry of the token held, None when nothing is held."""
        app_id = self._app_id
        self.failing = True
        left_s = None if valid_until_s is None else valid_until_s - now_s
        holding = left_s is not None and left_s > 0
        if exc.kind is FailureKind.CONFIG:
            delay_s = self._timing.config_retry_s * (0.9 + 0.2 * self._rand())
        elif exc.kind is FailureKind.QUOTA:
            delay_s = self.quota.next_delay_s()
        else:
            delay_s = self.transient.next_delay_s()
            ceiling_s = min(self._timing.expired_retry_s, self._timing.retry_cap_s)
            if not holding and delay_s > ceiling_s:
                # Every service is failing: ask again soon (jittered), until it answers.
                delay_s = ceiling_s / 2 + self._rand() * ceiling_s / 2
        within = "" if holding else " (no valid token held)"
        # A spent quota (45009, 45011) does not come back within a token's last minutes:
        # it keeps its hard backoff (an operator's `quota clear` then SIGHUP retries now).
        if left_s is not None and holding and exc.kind is not FailureKind.QUOTA:
            # Never past the held token's expiry: half of what is left (one more try before
            # it lapses), but no busier than `retry_base_s` while that much is left.
            cap_s = max(left_s / 2, min(self._timing.retry_base_s, left_s))
            if delay_s > cap_s:
                delay_s = cap_s
                within = f" (within the {left_s:.1f} s the held token has left)"
        if exc.kind is FailureKind.CONFIG:
            log.error(
                "%s: upstream refuses our configuration: %s; fix it, retrying in %.1f s%s",
                app_id,
                exc,
                delay_s,
                within,
            )
        elif exc.kind is FailureKind.QUOTA:
            log.error(
                "%s: upstream quota exhausted: %s; backing off %.1f s%s",
                app_id,
                exc,
                delay_s,
                within,
            )
        else:
            # At the short pace, one line per doubling of the attempts (1, 2, 4, 8 ...).
            attempts = self.transient.attempts
            loud = holding or attempts & (attempts - 1) == 0
            log.log(
                logging.WARNING if loud else logging.DEBUG,
                "%s: token fetch failed (%s), attempt %d; retrying in %.1f s%s",
                app_id,
                exc,
                attempts,
                delay_s,
                within,
            )
        return delay_s


def wait_until(now_s: float, *moments: float) -> float:
    """Seconds from `now_s` to the earliest of `moments`, never below `MIN_WAIT_S`."""
    earliest = min(moments, default=math.inf)
    return max(MIN_WAIT_S, earliest - now_s)
