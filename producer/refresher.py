"""Keeping one app's token fresh: the state machine of one credential.

`AppRefresher.step()` does whatever is due now and returns how many seconds may pass
before it must be called again. The service's scheduler calls it (never two steps of one
credential at once); tests call it by hand on a fake clock. Timing rules are in `timing`,
passive refresh in `_reports`, issuing a new version in `issuing`.

What it holds comes from three places: what it fetched, what it adopts from Redis, and
nothing else. Redis is read in one of two ways:
- `follows_store=True` (a lone refresher, the tests): each step reads its own snapshot;
- `follows_store=False` (the service): a `SnapshotFollower` reads every credential's
  snapshot in a batch per tick and hands each to `observe()`; a step reads its own only
  right before spending an upstream call, so an override or a token another producer
  stored is adopted instead of fetched again.

Either way: a newer valid stored update is adopted; as leader, a snapshot that is missing
or older than the held token is written back, and one that does not verify is deleted.
With Redis away a fresh token is published anyway and written once Redis is back.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Callable
from typing import Protocol

from consumer_lib.errors import InvalidUpdate, StoreError
from consumer_lib.wire.refresh_request import RefreshRequest
from consumer_lib.wire.update import TokenKind, TokenSource, TokenUpdate

from ._refresher_stats import RefresherStats
from ._reports import ReportBox, judge
from .apps import AppConfig, TokenApi
from .audit import AuditEvent, AuditLog
from .budget import RefreshBudget
from .issuing import IssueOutcome, Issuer
from .politeness import UpstreamGate
from .store import TokenStore
from .timing import MIN_WAIT_S, RefreshTiming, Retries, wait_until
from .wechat import FetchedToken, UpstreamError

log = logging.getLogger(__name__)

__all__ = ["MIN_WAIT_S", "AppRefresher", "Fetcher", "Gate", "RefreshTiming", "SoleProducer"]

#: A standby that reads Redis itself steps this often; the service wakes it on a change.
STANDBY_WAIT_S = 5.0
#: A standby fed by a follower has nothing to do until woken; this is only a safety net.
STANDBY_IDLE_S = 300.0
#: Answering refresh requests about an old token re-publishes at most this often.
REPUBLISH_ON_REQUEST_MIN_S = 1.0


class Fetcher(Protocol):
    """What the refresher needs from upstream (`WeChatClient` is one)."""

    def fetch(self, app: AppConfig, *, force_refresh: bool = False) -> FetchedToken: ...


class Gate(Protocol):
    """Whether this producer may fetch now (`Leadership` is one), and its write fence."""

    @property
    def fence_owner(self) -> str | None: ...

    @property
    def epoch(self) -> int | None: ...

    def may_fetch(self, token_api: TokenApi) -> bool: ...

    def fenced(self) -> None: ...


class SoleProducer:
    """The gate of a producer that needs no lease: always fetches, writes unfenced."""

    fence_owner: str | None = None
    epoch: int | None = None

    def may_fetch(self, token_api: TokenApi) -> bool:
        return True

    def fenced(self) -> None:
        """Nothing to step down from."""


class AppRefresher:
    """The refresh state machine of one app's access token."""

    kind = TokenKind.ACCESS_TOKEN

    def __init__(
        self,
        app: AppConfig,
        *,
        fetcher: Fetcher,
        store: TokenStore,
        publish: Callable[[TokenUpdate], None],
        producer_id: str,
        timing: RefreshTiming | None = None,
        gate: Gate | None = None,
        budget: RefreshBudget | None = None,
        clock: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
        audit: AuditLog | None = None,
        upstream: UpstreamGate | None = None,
        follows_store: bool = True,
        republish_phase_s: float | None = None,
    ) -> None:
        #: Replaced by a reload when the secret or API changes; read at each fetch.
        self.app = app
        self._gate: Gate = gate or SoleProducer()
        self._budget = budget
        self._reports = ReportBox()
        self._fetcher = fetcher
        self._store = store
        self._issuer = Issuer(store, audit=audit, who=producer_id)
        self._publish = publish
        self._producer_id = producer_id
        self._timing = timing or RefreshTiming()
        self._clock = clock
        self._upstream = upstream
        self._follows_store = follows_store
        self._phase_s = republish_phase_s
        self._retries = Retries(self._timing, rand=rand, app_id=app.app_id)
        self._step_lock = threading.Lock()
        self._held: TokenUpdate | None = None
        self._unsaved: TokenUpdate | None = None
        self._last_version = 0
        self._retry_at = 0.0
        self._republish_at = 0.0
        self._last_publish_s = -math.inf
        self._store_reachable = True
        self._store_probed_at = -math.inf
        self._warned_margin = False
        self.stats = RefresherStats()

    @property
    def held(self) -> TokenUpdate | None:
        """The newest token this refresher knows of (fetched or adopted)."""
        return self._held

    # ------------------------------------------------------------------ step
    def step(self) -> float:
        """Do what is due now; return the seconds until the next call is needed.

        A standby (not allowed to fetch) only follows Redis, so it holds the current token
        when it takes over; it neither fetches nor publishes.
        """
        with self._step_lock:
            return self._step()

    def _step(self) -> float:
        leading = self._gate.may_fetch(self.app.token_api)
        now = self._clock()
        about_to_fetch = self._refresh_due(now) and now >= self._retry_at
        if self._follows_store or (leading and (about_to_fetch or self._unsaved is not None)):
            self._sync_with_store(leading=leading)
        if not leading:
            self._republish_at = 0.0  # announce the token at once on taking over
            return STANDBY_WAIT_S if self._follows_store else STANDBY_IDLE_S
        self._handle_reports()
        now = self._clock()
        if self._refresh_due(now) and now >= self._retry_at:
            self._refresh(reason=self._refresh_reason(now))
            now = self._clock()
        held = self._held
        if held is not None and held.is_valid_at(now) and now >= self._republish_at:
            self._republish(held, now)
        return self._seconds_to_next_step(now)

    def observe(self, stored: TokenUpdate | InvalidUpdate | None) -> bool:
        """What a batched read found in Redis for this credential (from the follower).

        Skipped, returning False, while a step runs: that step decides on its own.
        """
        if not self._step_lock.acquire(blocking=False):
            return False
        try:
            leading = self._gate.may_fetch(self.app.token_api)
            if not leading:
                self._republish_at = 0.0
            self._store_probed_at = self._clock()
            if not self._store_reachable:
                log.info("%s: Redis reachable again", self.app.app_id)
                self._store_reachable = True
            try:
                if self._unsaved is not None and leading:
                    self._write(self._unsaved)
                self._apply_stored(stored, leading=leading)
            except StoreError as exc:
                self._store_unreachable(exc)
            return True
        finally:
            self._step_lock.release()

    def take_over(self) -> float | None:
        """On taking the lease: publish the held token now, without a step; returns the
        seconds until the next step is needed (None while a step runs: it takes over)."""
        if not self._step_lock.acquire(blocking=False):
            return None
        try:
            now_s = self._clock()
            if not self._gate.may_fetch(self.app.token_api):
                return STANDBY_WAIT_S if self._follows_store else STANDBY_IDLE_S
            held = self._held
            if held is not None and held.is_valid_at(now_s) and now_s >= self._republish_at:
                self._republish(held, now_s)
            return self._seconds_to_next_step(now_s)
        finally:
            self._step_lock.release()

    def _republish(self, held: TokenUpdate, now_s: float) -> None:
        self._publish(held)
        self._last_publish_s = now_s
        self._republish_at = self._timing.next_republish_at(now_s, self._phase_s)

    def _refresh_reason(self, now_s: float) -> str:
        held = self._held
        if held is None:
            return "none held"
        return "scheduled" if held.is_valid_at(now_s) else "expired"

    def _refresh_due(self, now_s: float) -> bool:
        held = self._held
        return held is None or now_s >= self._timing.refresh_at(held)

    def _seconds_to_next_step(self, now_s: float) -> float:
        held = self._held
        if held is None:
            moments = [self._retry_at]
        else:
            moments = [self._republish_at, max(self._timing.refresh_at(held), self._retry_at)]
        if self._unsaved is not None:
            moments.append(now_s + self._timing.store_retry_s)
        return wait_until(now_s, *moments)

    # ------------------------------------------------------------------ requests
    def request_refresh(self, request: RefreshRequest) -> None:
        """Note that a subscriber or operator saw a token rejected; thread-safe.

        The service wakes this refresher; `step()` decides what to do.
        """
        self._reports.add(request)
        self.stats.requests_received = self._reports.received

    def _handle_reports(self) -> None:
        held = self._held
        if held is None or not self._reports:
            self._reports.drain()
            return
        batch = self._reports.drain()
        app_id = self.app.app_id
        verdict = judge(
            batch, held, app_id=app_id, token_api=self.app.token_api, budget=self._budget
        )
        self.stats.requests_about_old_tokens += verdict.about_old
        self._issuer.record(AuditEvent.REFRESH_REQUEST, held, verdict.summary)
        if verdict.refresh_reason is not None:
            self.stats.forced_refreshes += 1
            log.warning(
                "%s: v%d reported rejected upstream (%d report(s)); refreshing it now%s",
                app_id,
                held.version,
                verdict.about_current,
                f" ({verdict.decision.reason})" if verdict.decision else "",
            )
            self._refresh(forced=True, reason=verdict.refresh_reason)
            return
        if verdict.over_budget is not None:
            self.stats.requests_over_budget += verdict.about_current
            self._issuer.record(AuditEvent.REQUEST_OVER_BUDGET, held, verdict.over_budget)
            log.warning(
                "%s: refresh request over budget (%s); re-publishing v%d instead",
                app_id,
                verdict.decision.reason if verdict.decision else "",
                held.version,
            )
        now_s = self._clock()
        if held.is_valid_at(now_s) and now_s - self._last_publish_s >= REPUBLISH_ON_REQUEST_MIN_S:
            self._republish(held, now_s)

    # ------------------------------------------------------------------ Redis
    def _sync_with_store(self, *, leading: bool) -> None:
        """Read this credential's snapshot and act on it (see `_apply_stored`)."""
        app_id = self.app.app_id
        now_s = self._clock()
        if not self._store_reachable and (
            now_s - self._store_probed_at < self._timing.store_retry_s
            or (leading and self._refresh_due(now_s))
        ):
            # Redis is away: look again every store_retry_s, and only after a due refresh
            # is published (each look may wait out a Redis timeout).
            return
        self._store_probed_at = now_s
        try:
            if self._unsaved is not None and leading:
                self._write(self._unsaved)
            try:
                stored: TokenUpdate | InvalidUpdate | None = self._store.read(app_id, self.kind)
            except InvalidUpdate as exc:
                stored = exc
            if not self._store_reachable:
                log.info("%s: Redis reachable again", app_id)
                self._store_reachable = True
            self._apply_stored(stored, leading=leading)
        except StoreError as exc:
            self._store_unreachable(exc)

    def _apply_stored(self, stored: TokenUpdate | InvalidUpdate | None, *, leading: bool) -> None:
        """Adopt a newer valid snapshot; as leader, delete an invalid one and write the
        held token back over a missing or older one. `StoreError` propagates."""
        app_id = self.app.app_id
        now_s = self._clock()
        if isinstance(stored, InvalidUpdate):
            if not leading:
                log.warning("%s: snapshot in Redis is invalid (%s)", app_id, stored)
            elif self._store.discard_invalid(app_id, self.kind):
                log.warning("%s: deleted an invalid snapshot from Redis (%s)", app_id, stored)
            stored = None
        held = self._held
        if stored is not None and stored.is_valid_at(now_s):
            if held is None or stored.version > held.version:
                self._adopt(stored)
                return
            if stored.version == held.version:
                return
        if leading and held is not None and held.is_valid_at(now_s):
            # Redis lost the snapshot (flushed, failed over) or holds an older one than ours:
            # late subscribers need ours.
            what = "no snapshot" if stored is None else f"an older v{stored.version}"
            log.warning("%s: Redis has %s; writing back %s", app_id, what, held)
            self._write(held)

    def _adopt(self, update: TokenUpdate) -> None:
        log.info("%s: adopting %s from Redis", self.app.app_id, update)
        self._held = update
        self._last_version = max(self._last_version, update.version)
        self.stats.adopted += 1
        self._retry_at = 0.0

    def _store_unreachable(self, exc: StoreError) -> None:
        self.stats.store_failures += 1
        if self._store_reachable:
            log.warning("%s: Redis unreachable (%s); carrying on from memory", self.app.app_id, exc)
        self._store_reachable = False

    def _write(self, update: TokenUpdate) -> bool:
        """Compare-and-set into Redis; False when Redis holds a newer one (then adopted) or
        when another producer holds the lease (then this one steps down)."""
        # StoreError propagates to the caller.
        result = self._store.write(update, fence_owner=self._gate.fence_owner)
        self._unsaved = None
        if result.written:
            return True
        if result.fenced:
            self._fenced_off(update)
            return False
        if result.stored is not None and result.stored.version == update.version:
            return True  # already there (a batched read raced our own write)
        self._refused(update, result.stored)
        return False

    def _fenced_off(self, update: TokenUpdate) -> None:
        self.stats.writes_fenced += 1
        log.warning(
            "%s: v%d fenced off: another producer holds the lease; standing by",
            self.app.app_id,
            update.version,
        )
        self._gate.fenced()

    def _refused(self, update: TokenUpdate, stored: TokenUpdate | None) -> None:
        self.stats.writes_refused += 1
        log.warning(
            "%s: Redis holds a newer version than v%d; keeping that one",
            self.app.app_id,
            update.version,
        )
        if stored is not None and stored.is_valid_at(self._clock()):
            self._adopt(stored)

    def _allocate_version(self, now_s: float) -> int:
        version = math.floor(now_s * 1000)
        if self._store_reachable:  # with Redis away, don't wait out its timeout here too
            try:
                version = self._issuer.new_version(self.app.app_id, self.kind, now_s=now_s)
            except StoreError as exc:
                self._store_unreachable(exc)
        version = max(version, self._last_version + 1)
        self._last_version = version
        return version

    # ------------------------------------------------------------------ upstream
    def _refresh(self, *, forced: bool = False, reason: str = "scheduled") -> None:
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
        # The fencing version is taken before the fetch: if another producer stores a token
        # while ours is in flight, theirs has the higher version and ours is refused.
        version = self._allocate_version(started_s)
        force_refresh = forced and app.token_api is TokenApi.STABLE
        try:
            fetched = self._fetcher.fetch(app, force_refresh=force_refresh)
        except UpstreamError as exc:
            if self._upstream is not None:
                self._upstream.answered(exc.errcode, self._clock())
            self.stats.fetch_failures += 1
            self.stats.last_error = str(exc)
            self._retry_at = self._clock() + self._retries.after_failure(exc)
            return
        self.stats.fetches += 1
        if self._budget is not None and not forced:
            self._budget.record_fetch(app.app_id, app.token_api)
        held = self._held
        if held is not None and fetched.value == held.value:
            # The stable API in normal mode hands back the token it still considers fresh.
            delay_s = self._retries.transient.next_delay_s()
            log.info(
                "%s: upstream has not renewed %s yet; asking again in %.1f s",
                app.app_id,
                held.masked,
                delay_s,
            )
            self._retry_at = self._clock() + delay_s
            return
        self._retries.reset()
        self._retry_at = 0.0
        update = TokenUpdate(
            app_id=app.app_id,
            kind=self.kind,
            value=fetched.value,
            issued_at=started_s,
            expires_at=started_s + fetched.expires_in_s,
            version=version,
            source=TokenSource.REFRESH,
            producer_id=self._producer_id,
            epoch=self._gate.epoch,
        )
        log.info("%s: fetched %s, lives %d s", app.app_id, update, fetched.expires_in_s)
        self._warn_short_margin(update)
        self._issue(update, forced=forced, reason=reason)

    def _issue(self, update: TokenUpdate, *, forced: bool, reason: str) -> None:
        now_s = self._clock()
        issued = self._issuer.issue(
            update,
            publish=lambda u: self._republish(u, now_s),
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
        if issued.outcome is IssueOutcome.UNSAVED:
            if issued.error is not None:
                self._store_unreachable(issued.error)
            self._unsaved = update
        self._held = update

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
