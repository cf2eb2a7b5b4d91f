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

What one credential knows is its `CredentialState` (`state`); `AppRefresher` is that state
with the step. The step orchestrates parts shared by every credential of a producer (a
`RefreshKit`), each handed the state explicitly: `StoreSync` (Redis), `Fetching` (upstream
and issuing), `RequestHandling` (refresh requests: checked, spaced, capped, audited in
summary), `OperatorRefreshing` (an operator's `wxtoken refresh`) and `Republisher`. What
differs between an access token, a ticket and a platform authorizer's token is the
`CredentialSource` it is given (`sources`): the one upstream call and what it needs, not
the state machine.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from consumer_lib.errors import InvalidUpdate
from consumer_lib.wire.refresh_request import RefreshRequest, safe_requester
from consumer_lib.wire.update import TokenKind, TokenUpdate
from producer.apps import AppConfig
from producer.leadership.clock import boottime
from producer.limits.budget import RefreshBudget
from producer.ports import Fetcher, Gate, SoleProducer
from producer.refresh.fetching import Fetching
from producer.refresh.operator import OperatorRefresh, OperatorRefreshing
from producer.refresh.publishing import Republisher
from producer.refresh.request_policy import REPUBLISH_ON_REQUEST_MIN_S, RequestHandling
from producer.refresh.sources import AppTokenSource, CredentialSource
from producer.refresh.state import CredentialState
from producer.refresh.stats import RefresherStats
from producer.refresh.store_sync import StoreSync
from producer.refresh.timing import MIN_WAIT_S, RefreshTiming, wait_until
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
    "RefreshKit",
    "RefreshTiming",
    "RefresherStats",
    "SoleProducer",
]

#: A standby that reads Redis itself steps this often; the service wakes it on a change.
STANDBY_WAIT_S = 5.0
#: A standby fed by a follower has nothing to do until woken; this is only a safety net.
STANDBY_IDLE_S = 300.0
#: Refresh requests cut a failed fetch's backoff short at most this often.
RETRY_ON_REQUEST_MIN_S = 10.0


@dataclass(frozen=True, slots=True)
class RefreshKit:
    """What every credential of one producer is refreshed with: built once (`build`)."""

    clock: Callable[[], float]
    timing: RefreshTiming
    gate: Gate
    budget: RefreshBudget | None
    issuer: Issuer
    #: False when a `SnapshotFollower` reads Redis for every credential in a batch.
    follows_store: bool
    stores: StoreSync
    fetching: Fetching
    requests: RequestHandling
    operator: OperatorRefreshing
    publisher: Republisher

    @classmethod
    def build(  # noqa: PLR0913 - the producer's shared parts, each injected
        cls,
        *,
        store: TokenStore,
        publish: Callable[[TokenUpdate], None],
        producer_id: str,
        timing: RefreshTiming | None = None,
        gate: Gate | None = None,
        budget: RefreshBudget | None = None,
        clock: Callable[[], float] = time.time,
        audit: AuditLog | None = None,
        upstream: UpstreamGate | None = None,
        follows_store: bool = True,
        probe: TokenProbe | None = None,
        on_fetch_failed: Callable[[str, TokenKind, UpstreamError], None] | None = None,
        on_refused: Callable[[str, TokenKind, TokenUpdate, float | None], None] | None = None,
    ) -> RefreshKit:
        """`on_fetch_failed` and `on_refused` tell `wxtoken status` (`UpstreamErrors`)."""
        gate = gate or SoleProducer()
        issuer = Issuer(store, audit=audit, who=producer_id)
        stores = StoreSync(store, issuer, gate=gate, clock=clock)
        publisher = Republisher(publish)
        return cls(
            clock=clock,
            timing=timing or RefreshTiming(),
            gate=gate,
            budget=budget,
            issuer=issuer,
            follows_store=follows_store,
            stores=stores,
            fetching=Fetching(
                stores=stores,
                issuer=issuer,
                publisher=publisher,
                gate=gate,
                clock=clock,
                upstream=upstream,
                on_fetch_failed=on_fetch_failed,
            ),
            requests=RequestHandling(
                issuer=issuer, budget=budget, probe=probe, clock=clock, on_refused=on_refused
            ),
            operator=OperatorRefreshing(budget=budget, probe=probe, clock=clock),
            publisher=publisher,
        )


class AppRefresher(CredentialState):
    """The refresh state machine of one credential: its state, and the step."""

    __slots__ = ("_kit",)

    def __init__(
        self,
        app: AppConfig,
        kit: RefreshKit,
        *,
        source: CredentialSource | None = None,
        fetcher: Fetcher | None = None,
        kind: TokenKind = TokenKind.ACCESS_TOKEN,
        republish_phase_s: float | None = None,
        rand: Callable[[], float] = random.random,
        steady: Callable[[], float] = boottime,
    ) -> None:
        """`source`: what the credential is fetched from (`sources`); by default the app's
        access token through `fetcher`. `steady`: a clock that never jumps
        (`JumpProofDeadline`)."""
        if source is None:
            if fetcher is None:
                raise ValueError("give a fetcher (an app's access token) or a source")
            source = AppTokenSource(fetcher, kit.budget)
        super().__init__(
            app,
            kind=kind,
            source=source,
            timing=kit.timing,
            rand=rand,
            wall=kit.clock,
            steady=steady,
            republish_phase_s=republish_phase_s,
        )
        self._kit = kit

    def holds_valid(self) -> bool:
        """Whether the token held is valid now, by this refresher's clock."""
        return self.holds_valid_at(self._kit.clock())

    # ------------------------------------------------------------------ step
    def step(self) -> float:
        """Do what is due now; return the seconds until the next call is needed.

        A standby (not allowed to fetch) only follows Redis, so it holds the current token
        when it takes over; it neither fetches nor publishes.
        """
        with self.step_lock:
            try:
                return self._step()
            finally:
                self.taken_version = None  # a fencing version serves its own step only

    def _step(self) -> float:
        kit = self._kit
        leading = kit.gate.may_fetch(self.app.token_api)
        now = kit.clock()
        # Fed by a follower, a step reads its own snapshot only when what Redis holds now
        # decides something: before an upstream call, before judging reports (an override
        # reported rejected must be known as the current token), to store an unsaved one.
        # (A ticket without a valid token is not about to fetch: at start-up, 20,000
        # tickets would each read Redis once for nothing before their tokens arrive.)
        about_to_fetch = (
            self.refresh_due(now) and now >= self.retry_at and self.source.ready(self.app, now)
        )
        must_read = (
            about_to_fetch
            or self.unsaved is not None
            or bool(self.reports)
            or bool(self.operator)
            or self.replace_reason is not None
        )
        if kit.follows_store or (leading and must_read):
            kit.stores.sync(self, leading=leading, about_to_fetch=about_to_fetch)
        if not leading:
            self.republish_at = 0.0  # announce the token at once on taking over
            kit.operator.refuse(self, "this producer is no longer the leader: ask again")
            return self._standby_wait_s()
        kit.operator.handle(self, self._refresh)  # answered before the reports
        if self.retry_wanted or self.reports:
            self._retry_failed_fetch(now, asked_by_operator=self.retry_wanted)
        self._ask_again_when_refused_is_due(now)
        answer = kit.requests.judge(self)
        if answer.refresh_reason is not None:
            self._refresh(forced=True, reason=answer.refresh_reason)
        elif answer.republish:
            self._republish_on_request()
        now = kit.clock()
        replace_reason, self.replace_reason = self.replace_reason, None
        if replace_reason is not None:
            self.retry_at = 0.0
            self._refresh(forced=False, reason=replace_reason)
            now = kit.clock()
        elif self.refresh_due(now) and now >= self.retry_at:
            self._refresh(forced=False, reason=self._refresh_reason(now))
            now = kit.clock()
        held = self.held
        if held is not None and held.is_valid_at(now) and now >= self.republish_at:
            kit.publisher.publish(self, held, now)
        return self._seconds_to_next_step(now)

    def _refresh(self, *, forced: bool, reason: str) -> None:
        self._kit.fetching.refresh(self, forced=forced, reason=reason)

    def _republish_on_request(self) -> None:
        """Reports of an older token (or refuted, or over budget): the services that sent
        them may have missed the current one; re-published at most every
        `REPUBLISH_ON_REQUEST_MIN_S`."""
        held, now_s = self.held, self._kit.clock()
        if (
            held is not None
            and held.is_valid_at(now_s)
            and now_s - self.last_publish_s >= REPUBLISH_ON_REQUEST_MIN_S
        ):
            self._kit.publisher.publish(self, held, now_s)

    def _standby_wait_s(self) -> float:
        return STANDBY_WAIT_S if self._kit.follows_store else STANDBY_IDLE_S

    # ------------------------------------------------------------ from other threads
    def knows_token(self, token_sha256: str) -> bool:
        """True when `token_sha256` is the fingerprint of the held token or of one of the
        last tokens held before it; thread-safe (the listener asks before charging)."""
        try:
            digest = bytes.fromhex(token_sha256)
        except ValueError:
            return False
        return digest in self.recent

    def request_refresh(self, request: RefreshRequest) -> None:
        """Note that a subscriber or operator saw a token rejected; thread-safe.

        The service wakes this refresher; `step()` decides what to do.
        """
        self.reports.add(request)
        self.stats.requests_received = self.reports.received

    def operator_refresh(self, item: OperatorRefresh) -> bool:
        """Queue an operator's refresh for the next step; thread-safe. False (and nothing
        queued) when too many wait already."""
        return self.operator.add(item)

    def retry_now(self) -> bool:
        """An operator's "try now" (SIGHUP): a credential whose last fetch failed is fetched
        at its next step instead of waiting out its backoff (the politeness gate still
        applies). Thread-safe; True when its last fetch failed (the caller wakes it)."""
        if not self.retries.failing:
            return False
        self.retry_wanted = True
        return True

    def dependency_arrived(self) -> None:
        """What it is fetched with arrived (an app's token, a platform's component token):
        one waiting for it may fetch at its next step (the caller wakes it) instead of at
        its next look."""
        if self.source.waiting:
            self.retry_at = 0.0

    def replace_now(self, reason: str) -> None:
        """Fetch at the next step (as leader) whatever is held: the token held came from a
        grant that is gone (a re-authorized platform customer). Thread-safe; the caller
        wakes the credential."""
        self.replace_reason = reason[:200]

    def observe(self, stored: TokenUpdate | InvalidUpdate | None) -> bool:
        """What a batched read found in Redis for this credential (from the follower).

        Skipped, returning False, while a step runs: that step decides on its own.
        """
        if not self.step_lock.acquire(blocking=False):
            return False
        try:
            leading = self._kit.gate.may_fetch(self.app.token_api)
            if not leading:
                self.republish_at = 0.0
            self._kit.stores.observed(self, stored, leading=leading)
            return True
        finally:
            self.step_lock.release()

    def take_over(self) -> float | None:
        """On taking the lease: publish the held token now, without a step; returns the
        seconds until the next step is needed (None while a step runs: it takes over)."""
        if not self.step_lock.acquire(blocking=False):
            return None
        try:
            kit = self._kit
            now_s = kit.clock()
            if not kit.gate.may_fetch(self.app.token_api):
                return self._standby_wait_s()
            held = self.held
            if held is not None and held.is_valid_at(now_s) and now_s >= self.republish_at:
                kit.publisher.publish(self, held, now_s)
            return self._seconds_to_next_step(now_s)
        finally:
            self.step_lock.release()

    def refresh_refused(self, refused: str) -> str | None:
        """A ticket fetch was refused access token `refused`: the passive-refresh path,
        for a ticket refresher (`ticket_fetch.RefreshToken`). Coalesced (a token other than
        `refused` is returned as is), within the budget, leader only; never waits on a
        step in progress (raises `TokenBusy`). Returns the token to use, None when the budget
        refuses; raises `UpstreamError` (transient) when not leading or the refresh failed."""
        if not self.step_lock.acquire(blocking=False):
            raise TokenBusy(f"{self.app.app_id}: a step of its access token is in progress")
        try:
            kit = self._kit
            held = self.held
            if held is not None and held.value != refused and held.is_valid_at(kit.clock()):
                return held.value
            app_id, token_api = self.app.app_id, self.app.token_api
            if not kit.gate.may_fetch(token_api):
                raise UpstreamError(f"{app_id}: not the leader", kind=FailureKind.TRANSIENT)
            decision = kit.budget.try_spend(app_id, token_api) if kit.budget else None
            if decision is not None and not decision.allowed:
                log.warning("%s: token refresh for a ticket over budget: %s", app_id, decision)
                return None
            self.stats.forced_refreshes += 1
            self._refresh(forced=True, reason="a ticket fetch was refused the token")
            held = self.held
            if held is None or held.value == refused:
                failed = f"{app_id}: its access token refresh failed ({self.stats.last_error})"
                raise UpstreamError(failed, kind=FailureKind.TRANSIENT)
            return held.value
        finally:
            self.step_lock.release()

    # ------------------------------------------------------------------ timing
    def _retry_failed_fetch(self, now_s: float, *, asked_by_operator: bool) -> None:
        """Cut a failed fetch's backoff short: for `retry_now`, or a refresh request (an
        operator's `wxtoken refresh`, a service's report) at most every
        `RETRY_ON_REQUEST_MIN_S` (anyone with a consumer's login can send those)."""
        self.retry_wanted = False
        if not self.retries.failing or now_s >= self.retry_at or not self.refresh_due(now_s):
            return
        if not asked_by_operator:
            if now_s - self.retried_on_request_at < RETRY_ON_REQUEST_MIN_S:
                return
            self.retried_on_request_at = now_s
        log.info(
            "%s: retrying its failed %s fetch now (%s) instead of in %.1f s",
            self.app.app_id,
            self.kind,
            "SIGHUP" if asked_by_operator else "a refresh request",
            self.retry_at - now_s,
        )
        self.retry_at = now_s

    def _refused_due_at(self) -> float | None:
        """When the refresh of a held token upstream refuses is due (a budget held it back)."""
        held, stats = self.held, self.stats
        if held is None or stats.refused_version != held.version:
            return None
        return stats.refused_refresh_due_at_s

    def _ask_again_when_refused_is_due(self, now_s: float) -> None:
        """A token upstream refuses whose refresh a budget held back: at the due moment it
        is reported again in our own name, so it is checked and refreshed as reports are,
        whether or not services still report it."""
        due_s, held = self._refused_due_at(), self.held
        if due_s is None or held is None or now_s < due_s:
            return
        self.stats.refused_refresh_due_at_s = None
        self.reports.add(
            RefreshRequest.for_token(
                held.app_id,
                held.value,
                kind=self.kind,
                reported_version=held.version,
                requester=safe_requester(f"producer:{self._kit.issuer.who}")[:128],
                now_s=now_s,
                reason="refused upstream; its refresh is due",
            )
        )

    def _refresh_reason(self, now_s: float) -> str:
        held = self.held
        if held is None:
            return "none held"
        return "scheduled" if held.is_valid_at(now_s) else "expired"

    def _seconds_to_next_step(self, now_s: float) -> float:
        held = self.held
        if held is None:
            moments = [self.retry_at]
        else:
            moments = [max(self.refresh_at(held), self.retry_at)]
            if held.is_valid_at(now_s):  # an expired one is not re-published: no busy wait
                moments.append(self.republish_at)
        if self.unsaved is not None:
            moments.append(now_s + self.timing.store_retry_s)
        refused_due_s = self._refused_due_at()
        if refused_due_s is not None:
            moments.append(refused_due_s)
        return wait_until(now_s, *moments)
