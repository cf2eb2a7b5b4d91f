"""A credential's side of upstream: fetching a token, and issuing it as a new version.

`Fetching.refresh(cred, ...)` calls WeChat for one credential: it asks the shared
`UpstreamGate` first (rate cap, fleet pause), takes the fencing version before the call
(the one this step's snapshot read brought, else one of its own; a version counter
poisoned beyond repair skips the call), backs off by failure kind (`timing.Retries`, each
failure also handed to `on_fetch_failed`), and hands a new token to `Issuer.issue`
(compare-and-set with its audit entry), then publishes it; with Redis away the token is
published anyway and written once Redis is back. One `Fetching` serves every credential
of a producer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from consumer_lib.wire.kinds import TokenKind
from consumer_lib.wire.update import TokenSource, TokenUpdate
from producer.apps import TokenApi
from producer.ports import Gate
from producer.refresh.publishing import Republisher
from producer.refresh.renewal import judge_fetch
from producer.refresh.state import CredentialState
from producer.refresh.store_sync import StoreSync
from producer.store.audit import AuditEvent
from producer.store.issuing import IssueOutcome, Issuer
from producer.upstream.errors import UpstreamError
from producer.upstream.gate import UpstreamGate
from producer.upstream.tickets import TokenBusy

log = logging.getLogger(__name__)

#: An unchanged answer at (or past) the held expiry is asked again no sooner than this.
UNCHANGED_MIN_RETRY_S = 0.5
#: A fetch held back for want of lease is tried again this soon (the lease ticks faster).
LEASE_RECHECK_S = 0.5


class Fetching:
    """Upstream calls of every credential of one producer."""

    __slots__ = (
        "_clock",
        "_gate",
        "_issuer",
        "_on_fetch_failed",
        "_publisher",
        "_stores",
        "_upstream",
    )

    def __init__(
        self,
        *,
        stores: StoreSync,
        issuer: Issuer,
        publisher: Republisher,
        gate: Gate,
        clock: Callable[[], float],
        upstream: UpstreamGate | None,
        on_fetch_failed: Callable[[str, TokenKind, UpstreamError], None] | None,
    ) -> None:
        self._stores = stores
        self._issuer = issuer
        self._publisher = publisher
        self._gate = gate
        self._clock = clock
        self._upstream = upstream
        self._on_fetch_failed = on_fetch_failed

    def refresh(self, cred: CredentialState, *, forced: bool = False, reason: str) -> None:
        """Fetch a new token for `cred`; `forced` (a reported rejection) uses the stable
        API's `force_refresh`, since in normal mode it would hand back the rejected token.
        `reason` goes into the audit entry of the new token."""
        app = cred.app  # a reload may replace it; this fetch uses one config throughout
        started_s = self._clock()
        version = self._version_to_fetch(cred, started_s, forced=forced)
        if version is None:
            return
        try:
            fetched = cred.source.fetch(
                app, cred.kind, force_refresh=forced and app.token_api is TokenApi.STABLE
            )
        except TokenBusy as exc:  # a ticket's token is in a step: soon again, not a failure
            log.info("%s; its %s again in %.1f s", exc, cred.kind, exc.retry_in_s)
            cred.retry_at = self._clock() + exc.retry_in_s
            return
        except UpstreamError as exc:
            self._failed(cred, exc)
            return
        cred.stats.fetches += 1
        held = cred.held
        renewal = judge_fetch(
            fetched,
            requested_at_s=started_s,
            held_value=None if held is None else held.value,
            held_expires_at_s=None if held is None else held.expires_at,
            margin_s=0.0,  # a changed value is timed by `RefreshTiming`, below
            min_retry_s=UNCHANGED_MIN_RETRY_S,
        )
        if held is not None and not renewal.changed:
            cred.source.count_fetch(app, forced=forced)
            self._unchanged(cred, held, refetch_at_s=renewal.refetch_at_s)
            return
        cred.retries.reset()
        cred.retry_at = 0.0
        # How late upstream may have started the value's life after our request: a value
        # renewed only once expired (WeCom) is asked again that much after its expiry.
        cred.answer_lag_s = max(0.0, self._clock() - started_s)
        update = TokenUpdate(
            app_id=app.app_id,
            kind=cred.kind,
            value=fetched.value,
            issued_at=started_s,
            expires_at=started_s + fetched.expires_in_s,
            version=version,
            source=TokenSource.REFRESH,
            producer_id=self._issuer.who,
            epoch=self._gate.epoch,
        )
        log.info("%s: fetched %s, lives %d s", app.app_id, update, fetched.expires_in_s)
        self._warn_short_margin(cred, update)
        self._issue(cred, update, forced=forced, reason=reason)
        # Counted after the publish: one Redis round trip less between the upstream answer
        # and the subscribers.
        cred.source.count_fetch(app, forced=forced)

    def _version_to_fetch(
        self, cred: CredentialState, started_s: float, *, forced: bool
    ) -> int | None:
        """The fencing version of a fetch that may start now; None (with `cred.retry_at`
        set) when it may not: the rate cap or a fleet pause, a source held off (waiting for
        its token), a poisoned version counter, or too little lease left."""
        app = cred.app
        if self._upstream is not None:
            wait_s = self._upstream.reserve(started_s)
            if wait_s > 0:  # rate cap or fleet pause: come back later, nothing spent
                cred.retry_at = started_s + wait_s
                return None
        held_off_until = cred.source.held_off_until(app, cred.kind, started_s)
        if held_off_until is not None:
            cred.retry_at = held_off_until
            return None
        # The fencing version is taken before the fetch (by this step's snapshot read, or
        # here): if another producer stores a token while ours is in flight, theirs has the
        # higher version and ours is refused.
        version = self._stores.allocate_version(cred, started_s)
        if version is None:  # the version counter is poisoned beyond repair: spend nothing
            cred.retry_at = started_s + cred.timing.config_retry_s
            return None
        # The step checked the lease when it began; an audit write, the budget script and the
        # snapshot read (with the version) may each have waited out a Redis timeout since.
        # Check again now, so a deposed leader never starts a fetch its successor may also
        # make (and, cut off from Redis, never a forced refresh).
        if not self._gate.may_fetch_now(
            app.token_api, need_s=cred.timing.lease_needed_s(), force_refresh=forced
        ):
            log.info(
                "%s: %s fetch not started: not enough confirmed lease left for the call",
                app.app_id,
                cred.kind,
            )
            cred.retry_at = self._clock() + LEASE_RECHECK_S
            return None
        return version

    def _failed(self, cred: CredentialState, exc: UpstreamError) -> None:
        if self._upstream is not None:
            self._upstream.answered(exc.errcode, self._clock())
        cred.stats.fetch_failures += 1
        cred.stats.last_error = str(exc)
        if self._on_fetch_failed is not None:
            self._on_fetch_failed(cred.app.app_id, cred.kind, exc)
        failed_at_s = self._clock()
        held = cred.held
        cred.retry_at = failed_at_s + cred.retries.after_failure(
            exc, now_s=failed_at_s, valid_until_s=None if held is None else held.expires_at
        )

    def _unchanged(self, cred: CredentialState, held: TokenUpdate, *, refetch_at_s: float) -> None:
        """WeCom's gettoken (and the stable API in normal mode, a ticket API too) handed back
        the value it still considers fresh: publish nothing, keep the expiry. Asked early (a
        report), the usual schedule stands; asked at the margin, ask again at the expiry,
        when upstream hands out the successor."""
        cred.retries.reset()
        refresh_at_s = cred.refresh_at(held)
        early = self._clock() < refresh_at_s
        cred.retry_at = 0.0 if early else refetch_at_s
        log.info(
            "%s: upstream handed back %s %s unchanged; asking again in %.1f s",
            cred.app.app_id,
            cred.kind,
            held.masked,
            max(0.0, (refresh_at_s if early else refetch_at_s) - self._clock()),
        )

    def _issue(
        self, cred: CredentialState, update: TokenUpdate, *, forced: bool, reason: str
    ) -> None:
        now_s = self._clock()
        issued = self._issuer.issue(
            update,
            event=AuditEvent.FORCED_REFRESH if forced else AuditEvent.REFRESH,
            reason=reason,
            fence_owner=self._gate.fence_owner,
            # With Redis away, publish first: the write waits for the next probe of Redis.
            write=cred.store_reachable,
            publish_unsaved=True,
        )
        if issued.outcome is IssueOutcome.FENCED:
            self._stores.fenced_off(cred, update)
            return
        if issued.outcome is IssueOutcome.REFUSED:
            self._stores.refused(cred, update, issued.stored)
            return
        self._publisher.publish(cred, update, now_s)  # written, or to be once Redis is back
        if issued.outcome is IssueOutcome.UNSAVED:
            if issued.error is not None:
                self._stores.unreachable(cred, issued.error)
            cred.unsaved, cred.unsaved_audit = update, issued.audit_entry
        cred.hold(update)

    def _warn_short_margin(self, cred: CredentialState, update: TokenUpdate) -> None:
        timing = cred.timing
        margin_s = timing.margin_s(update)
        if margin_s < timing.takeover_s and not cred.warned_margin:
            cred.warned_margin = True
            log.warning(
                "%s: refresh margin %.1f s is shorter than the lease TTL %.1f s: if the leader "
                "dies just before a refresh, the token can expire before a standby takes over; "
                "lower WXTOKEN_LEASE_TTL_S",
                update.app_id,
                margin_s,
                timing.takeover_s,
            )
