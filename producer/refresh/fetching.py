"""A refresher's side of upstream: fetching a token, and issuing it as a new version.

`Fetching` is the part of `AppRefresher` that calls WeChat: it asks the shared
`UpstreamGate` first (rate cap, fleet pause), takes the fencing version before the call
(the one this step's snapshot read brought, else one of its own; a version counter
poisoned beyond repair skips the call), backs off by failure kind (`timing.Retries`, each
failure also handed to `on_fetch_failed`), and hands a new token to `Issuer.issue`
(compare-and-set with its audit entry, publish); with Redis away the token is published
anyway.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from consumer_lib.wire.kinds import TokenKind
from consumer_lib.wire.update import TokenSource, TokenUpdate
from producer.apps import AppConfig, TokenApi
from producer.limits.budget import BudgetDecision, RefreshBudget
from producer.ports import Fetcher
from producer.refresh.renewal import judge_fetch
from producer.refresh.store_sync import StoreSync
from producer.refresh.timing import Retries
from producer.store.audit import AuditEvent
from producer.store.issuing import IssueOutcome
from producer.upstream.errors import FetchedToken, UpstreamError
from producer.upstream.gate import UpstreamGate
from producer.upstream.tickets import TokenBusy

log = logging.getLogger(__name__)

#: An unchanged answer at (or past) the held expiry is asked again no sooner than this.
UNCHANGED_MIN_RETRY_S = 0.5
#: A fetch held back for want of lease is tried again this soon (the lease ticks faster).
LEASE_RECHECK_S = 0.5


class Fetching(StoreSync):
    """Upstream calls of one credential; mixed into `AppRefresher`."""

    if not TYPE_CHECKING:  # the state is in `AppRefresher`'s slots (mypy checks those)
        __slots__ = ()
    _fetcher: Fetcher
    _upstream: UpstreamGate | None
    _budget: RefreshBudget | None
    _retries: Retries
    _warned_margin: bool
    _answer_lag_s: float
    _on_fetch_failed: Callable[[str, TokenKind, UpstreamError], None] | None

    def _republish(self, held: TokenUpdate, now_s: float) -> None:
        raise NotImplementedError

    def _refresh_at(self, held: TokenUpdate) -> float:
        raise NotImplementedError

    def _can_fetch(self, now_s: float) -> bool:
        """Whether a fetch has what it needs (a ticket: a valid token); no side effects."""
        del now_s
        return True

    def _held_off_until(self, now_s: float) -> float | None:
        """When a call may be made if not now (a ticket's hourly budget); None: now."""
        del now_s
        return None

    def _call_upstream(self, app: AppConfig, *, force_refresh: bool) -> FetchedToken:
        """The one upstream call of a refresh (a ticket refresher calls its ticket API)."""
        return self._fetcher.fetch(app, force_refresh=force_refresh)

    # PLR0911 (7 returns) is not a keeper: issue 20's refresher redesign replaces this.
    def _refresh(self, *, forced: bool = False, reason: str = "scheduled") -> None:  # noqa: PLR0911
        """Fetch a new token; `forced` (a reported rejection) uses the stable API's
        `force_refresh`, since in normal mode it would hand back the rejected token.
        `reason` goes into the audit entry of the new token."""
        app = self.app  # a reload may replace it; this fetch uses one config throughout
        started_s = self._clock()
        if self._upstream is not None:
            wait_s = self._upstream.reserve(started_s)
            if wait_s > 0:  # rate cap or fleet pause: come back later, nothing spent
                self._retry_at = started_s + wait_s
                return
        held_off_until = self._held_off_until(started_s)
        if held_off_until is not None:
            self._retry_at = held_off_until
            return
        # The fencing version is taken before the fetch (by this step's snapshot read, or
        # here): if another producer stores a token while ours is in flight, theirs has the
        # higher version and ours is refused.
        version = self._allocate_version(started_s)
        if version is None:  # the version counter is poisoned beyond repair: spend nothing
            self._retry_at = started_s + self._timing.config_retry_s
            return
        force_refresh = forced and app.token_api is TokenApi.STABLE
        # The step checked the lease when it began; an audit write, the budget script and the
        # snapshot read (with the version) may each have waited out a Redis timeout since.
        # Check again now, so a deposed leader never starts a fetch its successor may also
        # make (and, cut off from Redis, never a forced refresh).
        if not self._gate.may_fetch_now(
            app.token_api, need_s=self._timing.lease_needed_s(), force_refresh=forced
        ):
            log.info(
                "%s: %s fetch not started: not enough confirmed lease left for the call",
                app.app_id,
                self.kind,
            )
            self._retry_at = self._clock() + LEASE_RECHECK_S
            return
        try:
            fetched = self._call_upstream(app, force_refresh=force_refresh)
        except TokenBusy as exc:  # a ticket's token is in a step: soon again, not a failure
            log.info("%s; its %s again in %.1f s", exc, self.kind, exc.retry_in_s)
            self._retry_at = self._clock() + exc.retry_in_s
            return
        except UpstreamError as exc:
            if self._upstream is not None:
                self._upstream.answered(exc.errcode, self._clock())
            self.stats.fetch_failures += 1
            self.stats.last_error = str(exc)
            if self._on_fetch_failed is not None:
                self._on_fetch_failed(app.app_id, self.kind, exc)
            failed_at_s = self._clock()
            held = self._held
            self._retry_at = failed_at_s + self._retries.after_failure(
                exc, now_s=failed_at_s, valid_until_s=None if held is None else held.expires_at
            )
            return
        self.stats.fetches += 1
        held = self._held
        renewal = judge_fetch(
            fetched,
            requested_at_s=started_s,
            held_value=None if held is None else held.value,
            held_expires_at_s=None if held is None else held.expires_at,
            margin_s=0.0,  # a changed value is timed by `RefreshTiming`, below
            min_retry_s=UNCHANGED_MIN_RETRY_S,
        )
        if held is not None and not renewal.changed:
            # WeCom's gettoken (and the stable API in normal mode, a ticket API too) hands
            # back the value it still considers fresh: publish nothing, keep the expiry,
            # ask again right at that expiry, when upstream hands out the successor.
            self._count_fetch(forced=forced)
            self._retries.reset()
            # Asked early (a report), the usual schedule stands; asked at the margin, ask
            # again at the expiry, when upstream hands out the successor.
            early = self._clock() < self._refresh_at(held)
            self._retry_at = 0.0 if early else renewal.refetch_at_s
            log.info(
                "%s: upstream handed back %s %s unchanged; asking again in %.1f s",
                app.app_id,
                self.kind,
                held.masked,
                max(
                    0.0, (self._refresh_at(held) if early else renewal.refetch_at_s) - self._clock()
                ),
            )
            return
        self._retries.reset()
        self._retry_at = 0.0
        # How late upstream may have started the value's life after our request: a value
        # renewed only once expired (WeCom) is asked again that much after its expiry.
        self._answer_lag_s = max(0.0, self._clock() - started_s)
        update = TokenUpdate(
            app_id=app.app_id,
            kind=self.kind,
            value=fetched.value,
            issued_at=started_s,
            expires_at=started_s + fetched.expires_in_s,
            version=version,
            source=TokenSource.REFRESH,
            producer_id=self._issuer.who,
            epoch=self._gate.epoch,
        )
        log.info("%s: fetched %s, lives %d s", app.app_id, update, fetched.expires_in_s)
        self._warn_short_margin(update)
        self._issue(update, forced=forced, reason=reason)
        # Counted after the publish: one Redis round trip less between the upstream answer
        # and the subscribers.
        self._count_fetch(forced=forced)

    def _count_fetch(self, *, forced: bool) -> None:
        """Count a fetch nobody asked for in the fleet-wide budget (requests spend their own)."""
        if self._budget is not None and not forced:
            self._budget.record_fetch(self.app.app_id, self.app.token_api)

    def _spend_on_report(self) -> BudgetDecision | None:
        """Spend the fleet-wide budget of one report-caused refresh (None: none kept): the
        access token's forced (stable) or classic count; a ticket overrides this."""
        if self._budget is None:
            return None
        return self._budget.try_spend(self.app.app_id, self.app.token_api)

    def _issue(self, update: TokenUpdate, *, forced: bool, reason: str) -> None:
        now_s = self._clock()
        issued = self._issuer.issue(
            update,
            event=AuditEvent.FORCED_REFRESH if forced else AuditEvent.REFRESH,
            reason=reason,
            fence_owner=self._gate.fence_owner,
            # With Redis away, publish first: the write waits for the next probe of Redis.
            write=self._store_reachable,
            publish_unsaved=True,
        )
        if issued.outcome is IssueOutcome.FENCED:
            self._fenced_off(update)
            return
        if issued.outcome is IssueOutcome.REFUSED:
            self._refused(update, issued.stored)
            return
        self._republish(update, now_s)  # written, or to be written once Redis is back
        if issued.outcome is IssueOutcome.UNSAVED:
            if issued.error is not None:
                self._store_unreachable(issued.error)
            self._unsaved = update
        self._hold(update)

    def _warn_short_margin(self, update: TokenUpdate) -> None:
        margin_s = self._timing.margin_s(update)
        if margin_s < self._timing.takeover_s and not self._warned_margin:
            self._warned_margin = True
            log.warning(
                "%s: refresh margin %.1f s is shorter than the lease TTL %.1f s: if the leader "
                "dies just before a refresh, the token can expire before a standby takes over; "
                "lower WXTOKEN_LEASE_TTL_S",
                update.app_id,
                margin_s,
                self._timing.takeover_s,
            )
