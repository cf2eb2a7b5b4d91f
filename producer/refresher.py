"""Keeping one app's token fresh: when to fetch, what to adopt, how to back off.

`AppRefresher.step()` does whatever is due now and returns how many seconds may pass
before it must be called again; the service runs it in a thread of its own per app, so
one app's slow or failing upstream never delays another. All time comes from the
injected clock, so tests drive a whole token lifetime without sleeping.

Rules:
- Redis is read on every step: a newer valid update there (a manual override, or a
  token a previous run of the producer fetched) is adopted, not fetched again.
- A token is refreshed when `margin_s` of its life is left: a share of its lifetime,
  capped at `margin_max_s` (WeChat renews stable tokens, and keeps a replaced classic
  token usable, only in the last 300 s). An override is refreshed the same way, so it
  is respected until it nears its own expiry.
- Each new token gets a fresh version and is written to Redis with a compare-and-set,
  then handed to the publisher. With Redis away it is published anyway and written
  when Redis is back.
- Passive refresh: reports that a token was rejected (`request_refresh`, from any
  thread) are collected by fingerprint and handled on the next step. A report about a
  token that is no longer current only re-publishes the current one (at most once a
  second); a report about the current token refreshes it once (a stable token with
  `force_refresh`), if the fleet-wide budget allows, else re-publishes. Reports that pile
  up during that fetch are about the old token by the time they are handled.
- With an `AuditLog`, each new token (`refresh`, `forced_refresh`), each handled batch of
  reports (`refresh_request`, once with the count) and each refusal by the budget
  (`request_over_budget`) is recorded, the token masked.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from consumer_lib.backoff import Backoff
from consumer_lib.errors import InvalidUpdate, StoreError
from consumer_lib.wire.refresh_request import RefreshRequest, fingerprint
from consumer_lib.wire.update import TokenKind, TokenSource, TokenUpdate

from .apps import AppConfig, TokenApi
from .audit import AuditEvent, AuditLog
from .budget import RefreshBudget
from .errcodes import FailureKind
from .store import TokenStore
from .wechat import FetchedToken, UpstreamError

log = logging.getLogger(__name__)

#: Never busy-loop: the shortest wait `step()` asks for.
MIN_WAIT_S = 0.05
#: A standby only follows Redis; the service wakes it when leadership changes.
STANDBY_WAIT_S = 5.0
#: Answering refresh requests about an old token re-publishes at most this often.
REPUBLISH_ON_REQUEST_MIN_S = 1.0
#: An audit entry of a batch of reports names at most this many requesters.
AUDIT_NAMED_REQUESTERS = 3


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
    store_retry_s: float = 2.0
    #: How long a takeover may take (the lease TTL): a margin shorter than this lets a
    #: token lapse when the leader dies just before its refresh point.
    takeover_s: float = 0.0

    def margin_s(self, update: TokenUpdate) -> float:
        lifetime_s = update.expires_at - update.issued_at
        return min(self.margin_max_s, lifetime_s * self.margin_ratio)

    def refresh_at(self, update: TokenUpdate) -> float:
        """The moment `update` should be replaced."""
        return update.expires_at - self.margin_s(update)


@dataclass
class RefresherStats:
    """Counters a status page or a test can read."""

    fetches: int = 0
    fetch_failures: int = 0
    adopted: int = 0
    store_failures: int = 0
    writes_refused: int = 0
    writes_fenced: int = 0
    requests_received: int = 0
    requests_about_old_tokens: int = 0
    requests_over_budget: int = 0
    forced_refreshes: int = 0
    last_error: str | None = None


class AppRefresher:
    """The refresh state machine of one app's access token."""

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
        on_fetch_failed: Callable[[str, TokenKind, UpstreamError], None] | None = None,
    ) -> None:
        self.app = app
        self._audit = audit
        self._on_fetch_failed = on_fetch_failed  # UpstreamErrors.record, for `wxtoken status`
        self._requesters: set[str] = set()  # named in the audit entry of the next batch
        self._gate: Gate = gate or SoleProducer()
        self._budget = budget
        self._reports_lock = threading.Lock()
        self._reported: dict[str, int] = {}  # token fingerprint: reports not yet handled
        self._last_publish_s = -math.inf
        self._fetcher = fetcher
        self._store = store
        self._publish = publish
        self._producer_id = producer_id
        self._timing = timing or RefreshTiming()
        self._clock = clock
        self._rand = rand
        self._transient = Backoff(self._timing.retry_base_s, self._timing.retry_cap_s, rand=rand)
        self._quota = Backoff(
            self._timing.quota_retry_base_s, self._timing.quota_retry_cap_s, rand=rand
        )
        self._held: TokenUpdate | None = None
        self._unsaved: TokenUpdate | None = None
        self._last_version = 0
        self._retry_at = 0.0
        self._republish_at = 0.0
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
        leading = self._gate.may_fetch(self.app.token_api)
        self._sync_with_store(leading=leading)
        if not leading:
            self._republish_at = 0.0  # announce the token at once on taking over
            return STANDBY_WAIT_S
        self._handle_reports()
        now = self._clock()
        if self._refresh_due(now) and now >= self._retry_at:
            self._refresh(reason=self._refresh_reason(now))
            now = self._clock()
        held = self._held
        if held is not None and held.is_valid_at(now) and now >= self._republish_at:
            self._republish(held, now)
        return self._seconds_to_next_step(now)

    def _republish(self, held: TokenUpdate, now_s: float) -> None:
        self._publish(held)
        self._last_publish_s = now_s
        self._republish_at = now_s + self._timing.republish_interval_s

    # ------------------------------------------------------------------ requests
    def request_refresh(self, request: RefreshRequest) -> None:
        """Note that a subscriber or operator saw a token rejected; thread-safe.

        The service wakes this refresher's thread; `step()` decides what to do.
        """
        with self._reports_lock:
            fingerprint_ = request.token_sha256
            self._reported[fingerprint_] = self._reported.get(fingerprint_, 0) + 1
            self.stats.requests_received += 1
            if len(self._requesters) <= AUDIT_NAMED_REQUESTERS:
                self._requesters.add(request.requester)

    def _handle_reports(self) -> None:
        with self._reports_lock:
            reported, self._reported = self._reported, {}
            requesters, self._requesters = self._requesters, set()
        held = self._held
        if not reported or held is None:
            return
        app_id = self.app.app_id
        about_current = reported.pop(fingerprint(held.value), 0)
        about_old = sum(reported.values())
        self.stats.requests_about_old_tokens += about_old
        self._record(
            AuditEvent.REFRESH_REQUEST,
            held,
            f"{about_current + about_old} report(s), {about_current} of the current token, "
            f"{about_old} of older ones; from {_named(requesters)}",
        )
        if about_current:
            decision = self._budget.try_spend(app_id, self.app.token_api) if self._budget else None
            if decision is None or decision.allowed:
                self.stats.forced_refreshes += 1
                log.warning(
                    "%s: v%d reported rejected upstream (%d report(s)); refreshing it now%s",
                    app_id,
                    held.version,
                    about_current,
                    f" ({decision.reason})" if decision else "",
                )
                budget_note = f"; {decision.reason}" if decision else ""
                self._refresh(
                    forced=True, reason=f"reported rejected ({about_current} reports){budget_note}"
                )
                return
            self.stats.requests_over_budget += about_current
            self._record(
                AuditEvent.REQUEST_OVER_BUDGET,
                held,
                f"reported rejected ({about_current} reports); {decision.reason}",
            )
            log.warning(
                "%s: refresh request over budget (%s); re-publishing v%d instead",
                app_id,
                decision.reason,
                held.version,
            )
        now_s = self._clock()
        if held.is_valid_at(now_s) and now_s - self._last_publish_s >= REPUBLISH_ON_REQUEST_MIN_S:
            self._republish(held, now_s)

    def _record(self, event: AuditEvent, update: TokenUpdate, reason: str) -> None:
        """An audit entry about `update` by this producer, if there is an audit log."""
        if self._audit is not None:
            self._audit.record(
                event,
                update.app_id,
                kind=update.kind,
                who=self._producer_id,
                version=update.version,
                masked_token=update.masked,
                reason=reason,
            )

    def _refresh_reason(self, now_s: float) -> str:
        held = self._held
        if held is None:
            return "none held"
        return "scheduled" if held.is_valid_at(now_s) else "expired"

    def _refresh_due(self, now_s: float) -> bool:
        held = self._held
        return held is None or now_s >= self._timing.refresh_at(held)

    def _seconds_to_next_step(self, now_s: float) -> float:
        wake_at = [self._republish_at if self._held is not None else math.inf]
        if self._held is None:
            wake_at.append(self._retry_at)
        else:
            wake_at.append(max(self._timing.refresh_at(self._held), self._retry_at))
        if self._unsaved is not None:
            wake_at.append(now_s + self._timing.store_retry_s)
        return max(MIN_WAIT_S, min(wake_at) - now_s)

    # ------------------------------------------------------------------ Redis
    def _sync_with_store(self, *, leading: bool) -> None:
        """Adopt a newer token that Redis holds; as leader, write one that Redis missed."""
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
                stored = self._store.read(app_id, TokenKind.ACCESS_TOKEN)
            except InvalidUpdate as exc:
                stored = None
                if not leading:
                    log.warning("%s: snapshot in Redis is invalid (%s)", app_id, exc)
                elif self._store.discard_invalid(app_id, TokenKind.ACCESS_TOKEN):
                    log.warning("%s: deleted an invalid snapshot from Redis (%s)", app_id, exc)
        except StoreError as exc:
            self._store_unreachable(exc)
            return
        if not self._store_reachable:
            log.info("%s: Redis reachable again", app_id)
            self._store_reachable = True
        held = self._held
        if stored is not None and stored.is_valid_at(now_s):
            if held is None or stored.version > held.version:
                self._adopt(stored)
            return
        if leading and held is not None and held.is_valid_at(now_s):
            # Redis lost the snapshot (flushed, failed over): late subscribers need it back.
            log.warning("%s: Redis has no snapshot; writing back %s", app_id, held)
            try:
                self._write(held)
            except StoreError as exc:
                self._store_unreachable(exc)

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
            self.stats.writes_fenced += 1
            log.warning(
                "%s: v%d fenced off: another producer holds the lease; standing by",
                self.app.app_id,
                update.version,
            )
            self._gate.fenced()
            return False
        self.stats.writes_refused += 1
        log.warning(
            "%s: Redis holds a newer version than v%d; keeping that one",
            self.app.app_id,
            update.version,
        )
        if result.stored is not None and result.stored.is_valid_at(self._clock()):
            self._adopt(result.stored)
        return False

    def _allocate_version(self, now_s: float) -> int:
        version = math.floor(now_s * 1000)
        if self._store_reachable:  # with Redis away, don't wait out its timeout here too
            try:
                version = self._store.next_version(
                    self.app.app_id, TokenKind.ACCESS_TOKEN, now_s=now_s
                )
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
        app_id = self.app.app_id
        started_s = self._clock()
        # The fencing version is taken before the fetch: if another producer stores a token
        # while ours is in flight, theirs has the higher version and ours is refused.
        version = self._allocate_version(started_s)
        force_refresh = forced and self.app.token_api is TokenApi.STABLE
        try:
            fetched = self._fetcher.fetch(self.app, force_refresh=force_refresh)
        except UpstreamError as exc:
            self._fetch_failed(exc)
            return
        self.stats.fetches += 1
        held = self._held
        if held is not None and fetched.value == held.value:
            self._count_fetch(forced=forced)
            # The stable API in normal mode hands back the token it still considers fresh.
            delay_s = self._transient.next_delay_s()
            log.info(
                "%s: upstream has not renewed %s yet; asking again in %.1f s",
                app_id,
                held.masked,
                delay_s,
            )
            self._retry_at = self._clock() + delay_s
            return
        self._transient.reset()
        self._quota.reset()
        self._retry_at = 0.0
        update = TokenUpdate(
            app_id=app_id,
            kind=TokenKind.ACCESS_TOKEN,
            value=fetched.value,
            issued_at=started_s,
            expires_at=started_s + fetched.expires_in_s,
            version=version,
            source=TokenSource.REFRESH,
            producer_id=self._producer_id,
            epoch=self._gate.epoch,
        )
        log.info("%s: fetched %s, lives %d s", app_id, update, fetched.expires_in_s)
        margin_s = self._timing.margin_s(update)
        if margin_s < self._timing.takeover_s and not self._warned_margin:
            self._warned_margin = True
            log.warning(
                "%s: refresh margin %.1f s is shorter than the lease TTL %.1f s: if the leader "
                "dies just before a refresh, the token can expire before a standby takes over; "
                "lower WXTOKEN_LEASE_TTL_S",
                app_id,
                margin_s,
                self._timing.takeover_s,
            )
        if self._store_reachable:
            try:
                if not self._write(update):
                    self._count_fetch(forced=forced)
                    return
            except StoreError as exc:
                self._store_unreachable(exc)
                self._unsaved = update
        else:
            # Publish first: the write waits for the next probe of Redis (store_retry_s).
            self._unsaved = update
        self._held = update
        self._republish(update, self._clock())
        self._count_fetch(forced=forced)  # after the publish: a Redis round trip less before it
        self._record(AuditEvent.FORCED_REFRESH if forced else AuditEvent.REFRESH, update, reason)

    def _count_fetch(self, *, forced: bool) -> None:
        """A scheduled classic fetch counts against the day's budget (forced ones were
        spent before the fetch)."""
        if self._budget is not None and not forced:
            self._budget.record_fetch(self.app.app_id, self.app.token_api)

    def _fetch_failed(self, exc: UpstreamError) -> None:
        app_id = self.app.app_id
        self.stats.fetch_failures += 1
        self.stats.last_error = str(exc)
        if self._on_fetch_failed is not None:
            self._on_fetch_failed(app_id, TokenKind.ACCESS_TOKEN, exc)
        if exc.kind is FailureKind.CONFIG:
            delay_s = self._timing.config_retry_s * (0.9 + 0.2 * self._rand())
            log.error(
                "%s: upstream refuses our configuration: %s; fix it, retrying in %.0f s",
                app_id,
                exc,
                delay_s,
            )
        elif exc.kind is FailureKind.QUOTA:
            delay_s = self._quota.next_delay_s()
            log.error("%s: upstream quota exhausted: %s; backing off %.0f s", app_id, exc, delay_s)
        else:
            delay_s = self._transient.next_delay_s()
            log.warning(
                "%s: token fetch failed (%s), attempt %d; retrying in %.1f s",
                app_id,
                exc,
                self._transient.attempts,
                delay_s,
            )
        self._retry_at = self._clock() + delay_s


def _named(requesters: set[str]) -> str:
    """The requesters of a batch for an audit entry, at most `AUDIT_NAMED_REQUESTERS`."""
    names = sorted(requesters)
    shown = ", ".join(names[:AUDIT_NAMED_REQUESTERS]) or "unknown"
    return shown + (" and others" if len(names) > AUDIT_NAMED_REQUESTERS else "")
