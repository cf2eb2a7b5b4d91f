"""A producer's platform duty: which platform credentials it serves, and, as leader, acting
on the pushes the receiver stored.

Three threads, started with the service:

- ``platform-roster`` (every producer): reads the registry's authorized authorizers at
  start and every `sync_interval_s` (`Roster`) and changes the fleet when they changed, so
  a standby holds what it may have to take over;
- ``platform-callbacks`` (acts as leader only): every `poll_interval_s`, or at once when
  the receiver's hint arrives, acts on unprocessed callbacks (`CallbackProcessor`); after
  taking the lease, reconciles each platform with WeChat's list once its component token
  is held (`reconcile`);
- ``platform-hints``: subscribes to ``{prefix}:platform:events`` and wakes the callbacks
  thread (a lost hint costs one poll interval, nothing else).

A database outage stops none of the tokens: they are refreshed from what the refreshers
hold (an authorizer's refresh token read fails, and it backs off like any upstream failure);
pushes wait in the receiver's answer (it answers `success` only once stored).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import redis

from consumer_lib.errors import InvalidUpdate
from consumer_lib.outage import OutageLog
from consumer_lib.redis_errors import REDIS_ERRORS, describe_redis_error
from consumer_lib.wire.authorizers import authorizer_app_id
from consumer_lib.wire.keys import KeyLayout
from consumer_lib.wire.kinds import TokenKind
from producer.platform.crypto import MessageCrypto
from producer.platform.db.registry import MAX_PAGE, PlatformRegistry
from producer.platform.errors import RegistryUnavailable
from producer.platform.notice import StoredNotice, events_channel
from producer.platform.processor import CallbackProcessor
from producer.platform.reconcile import Reconciled, reconcile
from producer.platform.roster import Roster
from producer.platform.tokens import PlatformTokens
from producer.refresh.refresher import AppRefresher
from producer.refresh.sources import Components
from producer.store.audit import AuditLog
from producer.upstream.errors import UpstreamError

log = logging.getLogger(__name__)

#: Processed pushes are kept this long in the callback log, then deleted by the leader.
CALLBACK_RETENTION_S = 30 * 86_400.0
#: The leader prunes the callback log at most this often.
PRUNE_EVERY_S = 3600.0
#: A verify ticket older than this is logged as a warning (WeChat pushes one every 10 min) ...
TICKET_WARN_AGE_S = 3600.0
#: ... and older than this as an error: it has expired, no component token can be bought.
TICKET_ERROR_AGE_S = 12 * 3600.0


@dataclass(frozen=True)
class PlatformOverview:
    """One platform as the last survey of the registry found it (for metrics; no I/O to
    read)."""

    #: Our clock when the newest verify ticket was stored; None: none stored.
    ticket_received_at_s: float | None
    authorizers: dict[str, int]
    pushes_waiting: int
    oldest_waiting_received_at_s: float | None


@dataclass
class PlatformDutyStats:
    """What the platform threads did, for metrics and tests."""

    roster_reads: int = 0
    roster_failures: int = 0
    rounds: int = 0
    round_failures: int = 0
    hints: int = 0
    bad_hints: int = 0
    reconciled: dict[str, Reconciled] = field(default_factory=dict)
    #: False since a read of the registry failed, until one succeeds.
    registry_up: bool = True


@dataclass(frozen=True, kw_only=True)
class FleetAccess:
    """What the keeper changes in the producer: apply the roster, find and wake refreshers,
    forget a credential's snapshot."""

    apply_roster: Callable[[], None]
    refresher: Callable[[str, TokenKind], AppRefresher | None]
    wake: Callable[[AppRefresher], None]
    forget: Callable[[str], None]
    is_leader: Callable[[], bool]


class PlatformKeeper:
    """Runs the platform threads (see the module docstring)."""

    def __init__(  # noqa: PLR0913 - keyword-only: the platform's parts and the producer's seams
        self,
        *,
        registry: PlatformRegistry,
        roster: Roster,
        tokens: PlatformTokens,
        components: Components,
        fleet: FleetAccess,
        redis_client: redis.Redis,
        keys: KeyLayout,
        audit: AuditLog | None,
        who: str,
        stop: threading.Event,
        poll_interval_s: float = 2.0,
        sync_interval_s: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.registry = registry
        self.roster = roster
        self.tokens = tokens
        self._components = components
        self._fleet = fleet
        self._redis = redis_client
        self._channel = events_channel(keys.prefix)
        self._stop = stop
        self._poll_interval_s = poll_interval_s
        self._sync_interval_s = sync_interval_s
        self._clock = clock
        self._audit = audit
        self._who = who
        self._hinted = threading.Event()
        self._roster_wanted = threading.Event()
        self._reconcile_due: set[str] = set()
        self._was_leader = False
        self._pruned_at_s: float | None = None
        self._primed = False
        self.stats = PlatformDutyStats()
        #: Each platform's state from the registry, surveyed with every roster read.
        self.overview: dict[str, PlatformOverview] = {}
        self._ticket_levels: dict[str, str] = {}
        crypto = {
            appid: MessageCrypto(
                token=p.token.get_secret_value(),
                encoding_aes_key=p.encoding_aes_key.get_secret_value(),
                appid=appid,
            )
            for appid, p in roster.platforms.items()
        }
        self.processor = CallbackProcessor(
            registry=registry,
            crypto=crypto,
            tokens=tokens,
            components=components,
            hooks=self,
            audit=audit,
            who=who,
            clock=clock,
        )
        tokens.set_on_lost(self.lost)
        self._roster_outage = OutageLog(log, "the platform registry (reading authorizers)")
        self._round_outage = OutageLog(log, "the platform registry (acting on pushes)")
        self._hint_outage = OutageLog(log, f"Redis (subscribing to {self._channel})")
        #: The roster thread always (stored apps); the callbacks and hints threads with a
        #: platform to serve.
        self.threads = [
            threading.Thread(target=self._roster_loop, name="platform-roster", daemon=True)
        ]
        if self.roster.platforms:
            self.threads += [
                threading.Thread(
                    target=self._callbacks_loop, name="platform-callbacks", daemon=True
                ),
                threading.Thread(target=self._hints_loop, name="platform-hints", daemon=True),
            ]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def wake(self) -> None:
        """Look at the registry now (a stop, a test)."""
        self._hinted.set()
        self._roster_wanted.set()

    # ------------------------------------------------------------------ hooks
    def ticket_arrived(self, component_appid: str) -> None:
        refresher = self._fleet.refresher(component_appid, TokenKind.ACCESS_TOKEN)
        if refresher is not None and (refresher.retry_now() or not refresher.holds_valid()):
            self._fleet.wake(refresher)

    def authorized(
        self, component_appid: str, authorizer_appid: str, reason: str, *, after_dead_grant: bool
    ) -> None:
        """A new authorizer's refresher starts with the offered token (a snapshot left by a
        dead grant deleted first, so it is not adopted instead); one served already (a
        re-authorization) replaces the token it holds at its next step, now."""
        app_id = authorizer_app_id(component_appid, authorizer_appid)
        serving = self._fleet.refresher(app_id, TokenKind.ACCESS_TOKEN)
        if serving is not None:
            serving.replace_now(reason)
            self._fleet.wake(serving)
            return
        if after_dead_grant:
            self._fleet.forget(app_id)
        self.roster.add(component_appid, authorizer_appid)
        self._fleet.apply_roster()

    def unauthorized(self, component_appid: str, authorizer_appid: str) -> None:
        self.roster.drop(component_appid, authorizer_appid)
        self._fleet.apply_roster()
        self._fleet.forget(authorizer_app_id(component_appid, authorizer_appid))

    def lost(self, component_appid: str, authorizer_appid: str, why: str) -> None:
        """From a refresher's fetch (a worker thread): stop serving this authorizer. Its
        snapshot stays until it expires (the token may still work until then)."""
        if self.roster.drop(component_appid, authorizer_appid):
            log.warning("%s: %s no longer served: %s", component_appid, authorizer_appid, why)
            self._roster_wanted.set()  # the roster thread applies it (not from a step)

    # ------------------------------------------------------------------ threads
    def _roster_loop(self) -> None:
        while not self._stop.is_set():
            try:
                changed = self.roster.read()
                self.survey()
            except RegistryUnavailable as exc:
                self.stats.roster_failures += 1
                self.stats.registry_up = False
                self._roster_outage.failed(str(exc), self._sync_interval_s)
            else:
                self._prime_once()
                self.stats.roster_reads += 1
                self.stats.registry_up = True
                self._roster_outage.succeeded()
                if changed or self._roster_wanted.is_set():
                    self._fleet.apply_roster()
            self._roster_wanted.clear()
            self._roster_wanted.wait(self._sync_interval_s)

    def _prime_once(self) -> None:
        """Once, at start: remember every platform's refresh tokens, so authorizers keep
        refreshing should the database go away before each one's first refresh here."""
        if self._primed:
            return
        primed = sum(self.tokens.prime(component) for component in self.roster.platforms)
        self._primed = True
        if primed:
            log.info("remembered %d refresh token(s) for a database outage", primed)

    def survey(self) -> None:
        """Read each platform's state from the registry now (`overview`; the roster thread
        calls it with every read), and log a verify ticket that is getting old."""
        waiting = self.registry.unprocessed_callbacks(MAX_PAGE)
        overview: dict[str, PlatformOverview] = {}
        for component in self.roster.platforms:
            ticket = self.registry.verify_ticket(component)
            mine = [c for c in waiting if c.component_appid == component]
            overview[component] = PlatformOverview(
                ticket_received_at_s=None if ticket is None else ticket.received_at_s,
                authorizers={str(k): v for k, v in self.registry.counts(component).items()},
                pushes_waiting=len(mine),
                oldest_waiting_received_at_s=mine[0].received_at_s if mine else None,
            )
        self.overview = overview
        for component, seen in overview.items():
            self._judge_ticket_age(component, seen.ticket_received_at_s)

    def _judge_ticket_age(self, component: str, received_at_s: float | None) -> None:
        """Log a ticket's age when it crosses a threshold (once per crossing, every
        producer: the leader may be the one cut off from WeChat's pushes)."""
        age_s = None if received_at_s is None else self._clock() - received_at_s
        if age_s is None or age_s > TICKET_ERROR_AGE_S:
            level = "error"
        elif age_s > TICKET_WARN_AGE_S:
            level = "warning"
        else:
            level = "ok"
        before = self._ticket_levels.get(component)
        self._ticket_levels[component] = level
        if level == before or (before is None and level == "ok"):
            return
        if level == "ok":
            log.info("%s: a fresh component_verify_ticket is stored again", component)
        elif age_s is None:
            log.error(
                "%s: no component_verify_ticket stored: no component token can be had; "
                "is the receiver reachable by WeChat?",
                component,
            )
        else:
            log.log(
                logging.ERROR if level == "error" else logging.WARNING,
                "%s: the newest component_verify_ticket is %.1f h old (WeChat pushes one "
                "every 10 minutes; it expires after 12 h): check the receiver",
                component,
                age_s / 3600,
            )

    def _callbacks_loop(self) -> None:
        while not self._stop.is_set():
            self._hinted.clear()
            if self._fleet.is_leader():
                if not self._was_leader:
                    self._reconcile_due = set(self.roster.platforms)
                self._was_leader = True
                self.leader_round()
            else:
                self._was_leader = False
            self._hinted.wait(self._poll_interval_s)

    def leader_round(self) -> None:
        """As leader: act on stored pushes, reconcile what is due, prune the callback log
        (the callbacks thread calls it each poll interval or hint)."""
        try:
            while self.processor.process_pending() > 0 and not self._stop.is_set():
                pass
            self._reconcile_what_is_due()
            self._prune_when_due()
        except RegistryUnavailable as exc:
            self.stats.round_failures += 1
            self._round_outage.failed(str(exc), self._poll_interval_s)
            return
        self.stats.rounds += 1
        self._round_outage.succeeded()

    def _prune_when_due(self) -> None:
        """Delete processed pushes older than `CALLBACK_RETENTION_S` (never unprocessed ones),
        a page at a time, at most every `PRUNE_EVERY_S`."""
        now_s = self._clock()
        if self._pruned_at_s is not None and now_s - self._pruned_at_s < PRUNE_EVERY_S:
            return
        self._pruned_at_s = now_s
        deleted = 0
        while not self._stop.is_set():
            removed = self.registry.prune_callbacks(now_s - CALLBACK_RETENTION_S)
            deleted += removed
            if removed < MAX_PAGE:
                break
        if deleted:
            days = CALLBACK_RETENTION_S / 86_400
            log.info("deleted %d processed push(es) older than %.0f days", deleted, days)

    def _reconcile_what_is_due(self) -> None:
        for component in sorted(self._reconcile_due):
            refresher = self._components.get(component)
            held = None if refresher is None else refresher.held
            if held is None or not held.is_valid_at(self._clock()):
                continue  # once its component token is held
            try:
                done = reconcile(
                    self.registry,
                    self.tokens.client,
                    component,
                    held.value,
                    audit=self._audit,
                    who=self._who,
                )
            except UpstreamError as exc:
                log.warning("%s: reconciliation failed (%s); trying again later", component, exc)
                continue
            self._reconcile_due.discard(component)
            self.stats.reconciled[component] = done
            if done.unrecoverable:
                log.error(
                    "%s: %d authorizer(s) listed by WeChat without a refresh token must "
                    "authorize again: %s",
                    component,
                    len(done.unrecoverable),
                    ", ".join(done.unrecoverable[:20]),
                )
            if done.recovered:
                self._roster_wanted.set()

    def _hints_loop(self) -> None:
        while not self._stop.is_set():
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(self._channel)
                self._hint_outage.succeeded()
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if message is not None and message.get("type") == "message":
                        self._hint(message.get("data"))
            except REDIS_ERRORS as exc:
                self._hint_outage.failed(describe_redis_error(exc), 1.0)
                self._stop.wait(1.0)
            finally:
                with contextlib.suppress(*REDIS_ERRORS):
                    pubsub.close()

    def _hint(self, data: object) -> None:
        if not isinstance(data, bytes | str):
            self.stats.bad_hints += 1
            return
        try:
            StoredNotice.decode(data)
        except InvalidUpdate:
            self.stats.bad_hints += 1
            return
        self.stats.hints += 1
        self._hinted.set()
