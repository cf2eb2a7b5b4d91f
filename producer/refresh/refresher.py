"""Keeping one app's token fresh: the state machine of one credential.

`AppRefresher.step()` does whatever is due now and returns how many seconds may pass
before it must be called again. The service's scheduler calls it (never two steps of one
credential at once); tests call it by hand on a fake clock. Timing rules are in `timing`,
refresh requests in `request_policy`, issuing a new version in `issuing`.

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

The class is assembled from five modules: `store_sync` (Redis), `fetching` (upstream
and issuing), `request_policy` (refresh requests: checked, spaced, capped, audited in
summary), `operator` (an operator's `wxtoken refresh`), and this one (the step, timing of
the next step). `TicketRefresher` (`tickets`) and `AuthorizerRefresher` (`authorizers`)
change only what the upstream call needs.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Callable

from consumer_lib.errors import InvalidUpdate, StoreError
from consumer_lib.wire.refresh_request import RefreshRequest, safe_requester
from consumer_lib.wire.update import TokenKind, TokenUpdate
from producer.apps import AppConfig, TokenApi
from producer.leadership.clock import JumpProofDeadline, boottime
from producer.limits.budget import RefreshBudget
from producer.ports import Fetcher, Gate, SoleProducer
from producer.refresh.fetching import Fetching
from producer.refresh.operator import OperatorBox, OperatorRefreshing
from producer.refresh.reports import ReportBox
from producer.refresh.request_policy import (
    REPUBLISH_ON_REQUEST_MIN_S,
    RequestAudit,
    RequestHandling,
)
from producer.refresh.stats import RefresherStats
from producer.refresh.timing import MIN_WAIT_S, RefreshTiming, Retries, wait_until
from producer.store.audit import AuditLog
from producer.store.issuing import Issuer
from producer.store.tokens import TokenStore
from producer.upstream.errcodes import FailureKind
from producer.upstream.errors import UpstreamError
from producer.upstream.gate import UpstreamGate
from producer.upstream.tickets import TokenBusy
from producer.upstream.token_probe import TokenProbe

log = logging.getLogger(__name__)

__all__ = [
    "MIN_WAIT_S",
    "REPUBLISH_ON_REQUEST_MIN_S",
    "AppRefresher",
    "Fetcher",
    "Gate",
    "RefreshTiming",
    "SoleProducer",
]

#: A standby that reads Redis itself steps this often; the service wakes it on a change.
STANDBY_WAIT_S = 5.0
#: A standby fed by a follower has nothing to do until woken; this is only a safety net.
STANDBY_IDLE_S = 300.0
#: Refresh requests cut a failed fetch's backoff short at most this often.
RETRY_ON_REQUEST_MIN_S = 10.0
#: A WeCom credential is asked for again this long after its expiry (plus the answer lag).
WECOM_AFTER_EXPIRY_S = 0.02


class AppRefresher(OperatorRefreshing, RequestHandling, Fetching):
    """The refresh state machine of one app's access token."""

    # Slots: an instance dict took about 0.8 KiB (45 MiB at 30,000 credentials).
    # fmt: off
    __slots__ = (
        "_answer_lag_s", "_budget", "_clock", "_deadline", "_fetcher", "_follows_store",
        "_foreign_logged", "_gate", "_held", "_issuer", "_last_publish_s", "_last_version",
        "_on_fetch_failed", "_on_refused", "_operator", "_phase_s", "_probe", "_publish",
        "_recent", "_replace_reason", "_reports", "_republish_at", "_request_audit",
        "_retried_on_request_at", "_retries", "_retry_at", "_retry_wanted", "_step_lock",
        "_store", "_store_probed_at", "_store_reachable", "_taken_version", "_timing",
        "_unsaved", "_upstream",
        "_warned_margin", "app", "kind", "stats",
    )
    # fmt: on

    def __init__(  # noqa: PLR0913 - not a keeper: issue 20's refresher redesign splits these
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
        on_fetch_failed: Callable[[str, TokenKind, UpstreamError], None] | None = None,
        on_refused: Callable[[str, TokenKind, TokenUpdate, float | None], None] | None = None,
        kind: TokenKind = TokenKind.ACCESS_TOKEN,
        probe: TokenProbe | None = None,
        steady: Callable[[], float] = boottime,
    ) -> None:
        """`steady`: a clock that never jumps (see `JumpProofDeadline`)."""
        self.kind = kind
        #: Replaced by a reload when the secret or API changes; read at each fetch.
        self.app = app
        self._gate: Gate = gate or SoleProducer()
        self._budget = budget
        self._reports = ReportBox()
        self._operator = OperatorBox()
        self._fetcher = fetcher
        self._store = store
        self._issuer = Issuer(store, audit=audit, who=producer_id)
        #: Asks upstream whether a reported token is really refused (`request_policy`).
        self._probe = probe
        self._request_audit = RequestAudit(self._issuer, clock=clock)
        self._publish = publish
        self._timing = timing or RefreshTiming()
        self._clock = clock
        self._deadline = JumpProofDeadline(clock, steady)
        self._upstream = upstream
        self._on_fetch_failed = on_fetch_failed  # UpstreamErrors.record, for `wxtoken status`
        self._on_refused = on_refused  # UpstreamErrors.record_refused, the same
        self._follows_store = follows_store
        self._phase_s = republish_phase_s
        self._retries = Retries(self._timing, rand=rand, app_id=app.app_id)
        self._step_lock = threading.Lock()
        self._held: TokenUpdate | None = None
        self._recent: tuple[bytes, ...] = ()
        self._unsaved: TokenUpdate | None = None
        self._last_version = 0
        self._taken_version: int | None = None
        self._retry_at = 0.0
        self._retry_wanted = False
        self._retried_on_request_at = -math.inf
        self._republish_at = 0.0
        self._last_publish_s = -math.inf
        self._store_reachable = True
        self._store_probed_at = -math.inf
        self._warned_margin = False
        self._answer_lag_s = 0.0
        self._foreign_logged: str | None = None
        #: Set by `replace_now`: fetch at the next step, whatever is held.
        self._replace_reason: str | None = None
        self.stats = RefresherStats()

    @property
    def key(self) -> tuple[str, TokenKind]:
        """This credential's key in the scheduler: (app id, kind)."""
        return (self.app.app_id, self.kind)

    @property
    def held(self) -> TokenUpdate | None:
        """The newest token this refresher knows of (fetched or adopted)."""
        return self._held

    def holds_valid(self) -> bool:
        """Whether the token held is valid now, by this refresher's clock."""
        held = self._held
        return held is not None and held.is_valid_at(self._clock())

    # ------------------------------------------------------------------ step
    def step(self) -> float:
        """Do what is due now; return the seconds until the next call is needed.

        A standby (not allowed to fetch) only follows Redis, so it holds the current token
        when it takes over; it neither fetches nor publishes.
        """
        with self._step_lock:
            try:
                return self._step()
            finally:
                self._taken_version = None  # a fencing version serves its own step only

    def _step(self) -> float:
        leading = self._gate.may_fetch(self.app.token_api)
        now = self._clock()
        # Fed by a follower, a step reads its own snapshot only when what Redis holds now
        # decides something: before an upstream call, before judging reports (an override
        # reported rejected must be known as the current token), to store an unsaved one.
        # (A ticket without a valid token is not about to fetch: at start-up, 20,000
        # tickets would each read Redis once for nothing before their tokens arrive.)
        about_to_fetch = self._refresh_due(now) and now >= self._retry_at and self._can_fetch(now)
        must_read = (
            about_to_fetch
            or self._unsaved is not None
            or bool(self._reports)
            or bool(self._operator)
            or self._replace_reason is not None
        )
        if self._follows_store or (leading and must_read):
            self._sync_with_store(leading=leading, about_to_fetch=about_to_fetch)
        if not leading:
            self._republish_at = 0.0  # announce the token at once on taking over
            self._refuse_operator("this producer is no longer the leader: ask again")
            return STANDBY_WAIT_S if self._follows_store else STANDBY_IDLE_S
        self._handle_operator()  # an operator's refresh: answered, before the reports
        if self._retry_wanted or self._reports:
            self._retry_failed_fetch(now, asked_by_operator=self._retry_wanted)
        self._ask_again_when_refused_is_due(now)
        self._handle_reports()  # also writes the summed-up audit entry once it is due
        now = self._clock()
        replace_reason, self._replace_reason = self._replace_reason, None
        if replace_reason is not None:
            self._retry_at = 0.0
            self._refresh(reason=replace_reason)
            now = self._clock()
        elif self._refresh_due(now) and now >= self._retry_at:
            self._refresh(reason=self._refresh_reason(now))
            now = self._clock()
        held = self._held
        if held is not None and held.is_valid_at(now) and now >= self._republish_at:
            self._republish(held, now)
        return self._seconds_to_next_step(now)

    def retry_now(self) -> bool:
        """An operator's "try now" (SIGHUP): a credential whose last fetch failed is fetched
        at its next step instead of waiting out its backoff (the politeness gate still
        applies). Thread-safe; True when its last fetch failed (the caller wakes it)."""
        if not self._retries.failing:
            return False
        self._retry_wanted = True
        return True

    def replace_now(self, reason: str) -> None:
        """Fetch at the next step (as leader) whatever is held: the token held came from a
        grant that is gone (a re-authorized platform customer). Thread-safe; the caller
        wakes the credential."""
        self._replace_reason = reason[:200]

    def _retry_failed_fetch(self, now_s: float, *, asked_by_operator: bool) -> None:
        """Cut a failed fetch's backoff short: for `retry_now`, or a refresh request (an
        operator's `wxtoken refresh`, a service's report) at most every
        `RETRY_ON_REQUEST_MIN_S` (anyone with a consumer's login can send those)."""
        self._retry_wanted = False
        if not self._retries.failing or now_s >= self._retry_at or not self._refresh_due(now_s):
            return
        if not asked_by_operator:
            if now_s - self._retried_on_request_at < RETRY_ON_REQUEST_MIN_S:
                return
            self._retried_on_request_at = now_s
        log.info(
            "%s: retrying its failed %s fetch now (%s) instead of in %.1f s",
            self.app.app_id,
            self.kind,
            "SIGHUP" if asked_by_operator else "a refresh request",
            self._retry_at - now_s,
        )
        self._retry_at = now_s

    def _refused_due_at(self) -> float | None:
        """When the refresh of a held token upstream refuses is due (a budget held it back)."""
        held, stats = self._held, self.stats
        if held is None or stats.refused_version != held.version:
            return None
        return stats.refused_refresh_due_at_s

    def _ask_again_when_refused_is_due(self, now_s: float) -> None:
        """A token upstream refuses whose refresh a budget held back: at the due moment it
        is reported again in our own name, so it is checked and refreshed as reports are,
        whether or not services still report it."""
        due_s, held = self._refused_due_at(), self._held
        if due_s is None or held is None or now_s < due_s:
            return
        self.stats.refused_refresh_due_at_s = None
        self._reports.add(
            RefreshRequest.for_token(
                held.app_id,
                held.value,
                kind=self.kind,
                reported_version=held.version,
                requester=safe_requester(f"producer:{self._issuer.who}")[:128],
                now_s=now_s,
                reason="refused upstream; its refresh is due",
            )
        )

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
        return held is None or now_s >= self._refresh_at(held)

    def _refresh_at(self, held: TokenUpdate) -> float:
        """When to fetch again. WeCom hands out the same value until it has expired (its
        tokens and tickets alike): asking earlier only gets it back, so ask right after the
        expiry, late by as much as upstream may have started its life after our request."""
        if self.app.token_api is TokenApi.WECOM:
            at_s = held.expires_at + self._answer_lag_s + WECOM_AFTER_EXPIRY_S
        else:
            at_s = self._timing.refresh_at(held)
        # Never later than the same moment counted on a clock that does not jump.
        return self._deadline.effective((held.version, held.expires_at), at_s)

    def _seconds_to_next_step(self, now_s: float) -> float:
        held = self._held
        if held is None:
            moments = [self._retry_at]
        else:
            moments = [max(self._refresh_at(held), self._retry_at)]
            if held.is_valid_at(now_s):  # an expired one is not re-published: no busy wait
                moments.append(self._republish_at)
        if self._unsaved is not None:
            moments.append(now_s + self._timing.store_retry_s)
        refused_due_s = self._refused_due_at()
        if refused_due_s is not None:
            moments.append(refused_due_s)
        return wait_until(now_s, *moments)

    def refresh_refused(self, refused: str) -> str | None:
        """A ticket fetch was refused access token `refused`: the passive-refresh path,
        for a ticket refresher (`ticket_fetch.RefreshToken`). Coalesced (a token other than
        `refused` is returned as is), within the budget, leader only; never waits on a
        step in progress (raises `TokenBusy`). Returns the token to use, None when the budget
        refuses; raises `UpstreamError` (transient) when not leading or the refresh failed."""
        if not self._step_lock.acquire(blocking=False):
            raise TokenBusy(f"{self.app.app_id}: a step of its access token is in progress")
        try:
            held = self._held
            now_s = self._clock()
            if held is not None and held.value != refused and held.is_valid_at(now_s):
                return held.value
            app_id, token_api = self.app.app_id, self.app.token_api
            if not self._gate.may_fetch(token_api):
                raise UpstreamError(f"{app_id}: not the leader", kind=FailureKind.TRANSIENT)
            decision = self._budget.try_spend(app_id, token_api) if self._budget else None
            if decision is not None and not decision.allowed:
                log.warning("%s: token refresh for a ticket over budget: %s", app_id, decision)
                return None
            self.stats.forced_refreshes += 1
            self._refresh(forced=True, reason="a ticket fetch was refused the token")
            held = self._held
            if held is None or held.value == refused:
                failed = f"{app_id}: its access token refresh failed ({self.stats.last_error})"
                raise UpstreamError(failed, kind=FailureKind.TRANSIENT)
            return held.value
        finally:
            self._step_lock.release()
