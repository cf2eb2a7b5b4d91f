"""The producer process: a lease, a scheduler over every credential, a follower, a publisher.

Threads, whatever the number of apps (at most `upstream_concurrency` + 6):

    main          waits for a signal; reloads the apps file on SIGHUP
    lease         takes and renews the leader lease (`Leadership`)
    scheduler     one heap of due times; hands due credentials to the workers
    refresh-N     `upstream_concurrency` workers running `AppRefresher.step`
    follower      one batched read of every snapshot per `follow_interval_s`
    publisher     the one pika connection that publishes (`Publisher`)
    requests      the refresh request listener
    platform-*    with third-party platforms: roster, callbacks, hints (`PlatformKeeper`)

Any number of producer processes may run against one Redis: the lease decides which one
fetches and publishes; the others follow Redis in batches and take over when the leader
dies or stops (a clean stop releases the lease, so a standby takes over at once; a
standby tries the lease every `STANDBY_LEASE_POLL_S`). On taking over, a standby reads
every snapshot once more, then every credential re-publishes the token it holds, with no
upstream call, and tells the scheduler when it next needs a step. Refresh requests reach
every producer; only the leader acts on them. SIGHUP (in `__main__`) calls `reload()`.

`ProducerService` composes the parts, wiring them room by room in `__init__`: Redis (the
store, the lease, the follower), the publisher, upstream, the fleet's shared records, the
control handler, the fleet (the refreshers of each app's credentials are made by
`CredentialRefreshers`), the platforms, then `Succession` (the lease and follower
threads' duties: following, taking over, announcing the served apps) and the request
listener.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import redis

from consumer_lib.errors import StoreError
from consumer_lib.snapshot import connect_redis
from consumer_lib.wire.keys import KeyLayout
from consumer_lib.wire.refresh_request import RefreshRequest
from consumer_lib.wire.signing import codec_from_settings
from consumer_lib.wire.update import TokenKind
from producer.apps import AppConfig
from producer.fleet import Fleet, Reloaded
from producer.leadership.clock_skew import SkewMonitor
from producer.leadership.follower import SnapshotFollower
from producer.leadership.lease import Leadership
from producer.leadership.succession import Succession
from producer.limits.budget import RefreshBudget
from producer.limits.ticket_budget import TicketBudget
from producer.messaging.control import ControlHandler, QuotaClearer, control_keys
from producer.messaging.publisher import Publisher
from producer.messaging.request_listener import RequestListener
from producer.refresh.credentials import CredentialRefreshers, scheduled_step
from producer.refresh.operator import OperatorRefresh
from producer.refresh.refresher import AppRefresher, Fetcher
from producer.refresh.sources import Components
from producer.refresh.timing import RefreshTiming
from producer.scheduler import Scheduler, WorkerPool
from producer.settings import ProducerSettings
from producer.store.audit import AuditLog
from producer.store.remembering_codec import RememberingCodec
from producer.store.tokens import TokenStore
from producer.store.upstream_failures import UpstreamErrors
from producer.upstream.gate import UpstreamGate
from producer.upstream.meter import MeteredFetcher
from producer.upstream.routing import Upstream
from producer.upstream.token_probe import TokenProbe

if TYPE_CHECKING:  # the platform extra (SQLAlchemy) is imported only when platforms are served
    from producer.platform.keeper import PlatformKeeper
    from producer.platform.wiring import PlatformParts, PlatformSetup

log = logging.getLogger(__name__)

#: Redis connections beyond one per worker: lease, follower, listener, platform hints, spare.
EXTRA_REDIS_CONNECTIONS = 7


class ProducerService:
    """Wires scheduler, refreshers, follower, store and publisher; `start()`, `close()`."""

    def __init__(
        self,
        settings: ProducerSettings,
        apps: Sequence[AppConfig],
        *,
        redis_client: redis.Redis | None = None,
        fetcher: Fetcher | None = None,
        publisher: Publisher | None = None,
        clock: Callable[[], float] = time.time,
        platform_setup: PlatformSetup | None = None,
    ) -> None:
        """Wire the parts room by room, each after the parts it needs; no thread starts
        before `start()`. A given `redis_client`, `fetcher` or `publisher` replaces the one
        made from `settings` (the service closes only what it made)."""
        self._settings = settings
        self._stop = threading.Event()
        keys = KeyLayout(settings.key_prefix)
        self._wire_redis(redis_client, keys, clock)  # the store, the lease, the follower
        self.publisher = publisher or self._new_publisher(clock)
        self._wire_upstream(fetcher, clock)  # the fetcher, its probe, the gate
        self._wire_records(keys, clock)  # the budgets, the audit trail, the failed fetches
        #: Operators' signed control requests (`wxtoken quota clear`); the leader acts.
        self.control = self._control_handler(apps, keys, clock)
        parts = self._platform_parts(platform_setup, clock)
        self._wire_fleet(apps, parts, clock)  # the workers, the scheduler, the refreshers
        self.platform: PlatformKeeper | None = self._platform_keeper(parts, clock)
        if self.platform is not None:
            self.fleet.apply(self._served_apps())  # with the registry's apps and authorizers
        #: The lease and follower threads: who leads, following, taking over, announcing.
        self.succession = self._succession(keys, clock)
        self.requests = RequestListener.from_settings(
            settings,
            on_request=self._on_request,
            on_control=self.control.handle,
            screen=self._worth_handling,
        )

    # ------------------------------------------------------------ wiring, room by room
    def _wire_redis(
        self, redis_client: redis.Redis | None, keys: KeyLayout, clock: Callable[[], float]
    ) -> None:
        """Store and leadership: the Redis client, the codec, the token store, the lease,
        the clock check and the follower."""
        settings = self._settings
        client = redis_client or connect_redis(
            settings.redis_url,
            timeout_s=settings.redis_timeout_s,
            tls=settings.redis_tls,
            max_connections=settings.upstream_concurrency + EXTRA_REDIS_CONNECTIONS,
        )
        self._redis = client
        #: The Redis pool if this service made it, and so closes it.
        self._owned_redis = client if redis_client is None else None
        codec = RememberingCodec(codec_from_settings(settings, must_sign=True))
        self._codec = codec
        self.store = TokenStore(client, keys, codec, clock=clock)
        # The owner id is unique per process run, even where hostnames and pids repeat.
        self.leadership = Leadership(
            client,
            lease_key=keys.leader,
            epoch_key=keys.leader_epoch,
            owner=f"{settings.producer_id}#{random.getrandbits(32):08x}",
            ttl_s=settings.lease_ttl_s,
            on_change=self._on_leadership,
        )
        #: This producer's clock against Redis's, checked on lease ticks.
        self.clock_skew = SkewMonitor(client, keys, producer_id=settings.producer_id, clock=clock)
        self.follower = SnapshotFollower(client, keys, codec)

    def _new_publisher(self, clock: Callable[[], float]) -> Publisher:
        """The one connection that publishes every update, signed by the service's codec."""
        settings = self._settings
        return Publisher(
            settings.amqp_url,
            settings.exchange,
            tls=settings.amqp_tls,
            sender=f"wxtoken-producer/{settings.producer_id}",
            heartbeat_s=settings.heartbeat_s,
            reconnect_max_s=settings.reconnect_max_s,
            clock=clock,
            codec=self._codec,
        )

    def _wire_upstream(self, fetcher: Fetcher | None, clock: Callable[[], float]) -> None:
        """Upstream: the fetcher (unless given, WeChat or WeCom by the app, `Upstream`, with
        HTTP pools sized to the workers), the token probe and the gate (rate and pauses)."""
        settings = self._settings
        #: The HTTP pools if this service made them, and so closes them.
        self._owned_upstream: Upstream | None = None
        if fetcher is None:
            fetcher = self._owned_upstream = Upstream.from_settings(settings)
        self._fetcher: Fetcher = fetcher
        #: Checks a reported token upstream before a request-caused refresh (`token_probe`).
        self.probe = TokenProbe.of(
            self._unmetered_fetcher(), clock=clock, ttl_s=settings.token_check_ttl_s
        )
        self.upstream = UpstreamGate(
            rate_per_s=settings.upstream_rate_per_s, pause_s=settings.quota_retry_base_s
        )

    def _unmetered_fetcher(self) -> Fetcher:
        """The fetcher without the metrics port's meter (`MeteredFetcher` counts fetches):
        token checks and quota clears are not fetches."""
        fetcher = self._fetcher
        return fetcher.inner if isinstance(fetcher, MeteredFetcher) else fetcher

    def _wire_records(self, keys: KeyLayout, clock: Callable[[], float]) -> None:
        """What every producer of the fleet shares in Redis besides the snapshots: the
        refresh and ticket budgets, the audit trail, the last failed fetches."""
        settings = self._settings
        self.budget = RefreshBudget(  # read by producer.observability.metrics
            self._redis,
            keys,
            clock=clock,
            requested_per_day=settings.requested_refreshes_per_day,
            requested_min_interval_s=settings.requested_refresh_interval_s,
        )
        #: One audit trail for every app (`{prefix}:audit`); recording never raises.
        self.audit = AuditLog(self._redis, keys, clock=clock)
        #: The last failed fetch per credential, for `wxtoken status`; never raises.
        self.upstream_errors = UpstreamErrors(self._redis, keys, clock=clock)
        #: WeCom's hourly ticket limits, fleet-wide (400 per corp, 100 per agent and kind).
        self.ticket_budget = TicketBudget(self._redis, keys, clock=clock)

    def _control_handler(
        self, apps: Sequence[AppConfig], keys: KeyLayout, clock: Callable[[], float]
    ) -> ControlHandler:
        """Control requests: quota clears go to the unmetered fetcher, refreshes to
        `_submit_refresh`."""
        settings = self._settings
        inner = self._unmetered_fetcher()
        return ControlHandler(
            self._redis,
            keys,
            apps=apps,
            upstream=inner if isinstance(inner, QuotaClearer) else None,
            verify_keys=control_keys(settings),
            is_leader=lambda: self.leadership.is_leader,
            producer_id=settings.producer_id,
            audit=self.audit,
            clock=clock,
            min_interval_s=settings.clear_quota_min_interval_s,
            submit_refresh=self._submit_refresh,
        )

    def _platform_parts(
        self, setup: PlatformSetup | None, clock: Callable[[], float]
    ) -> PlatformParts | None:
        """With platforms, what their credentials' refreshers need: the platforms' token
        fetcher and their roster (read once here); None without."""
        if setup is None:
            return None
        from producer.platform.wiring import platform_parts

        return platform_parts(setup, self._settings, audit=self.audit, clock=clock)

    def _wire_fleet(
        self,
        apps: Sequence[AppConfig],
        parts: PlatformParts | None,
        clock: Callable[[], float],
    ) -> None:
        """Refresh: the workers, one scheduler over them, and the fleet of the apps file's
        apps, each credential's refresher made by `CredentialRefreshers`."""
        settings = self._settings
        self.pool = WorkerPool(settings.upstream_concurrency, name="refresh")
        self.scheduler = Scheduler(self.pool.submit)
        made = CredentialRefreshers(
            fetcher=self._fetcher,
            store=self.store,
            publish=self.publisher.publish,
            producer_id=settings.producer_id,
            timing=RefreshTiming.from_settings(settings),
            gate=self.leadership,
            budget=self.budget,
            clock=clock,
            audit=self.audit,
            upstream_errors=self.upstream_errors,
            upstream=self.upstream,
            probe=self.probe,
            ticket_budget=self.ticket_budget,
            platform_tokens=None if parts is None else parts.tokens,
            authorizer_tokens=None if parts is None else parts.tokens,
            components=Components() if parts is None else parts.components,
        )
        #: The apps file's apps; the platforms' credentials come from `platform.roster`.
        self._file_apps = list(apps)
        self._apply_lock = threading.Lock()
        self.fleet = Fleet(apps, made.of_app)

    def _platform_keeper(
        self, parts: PlatformParts | None, clock: Callable[[], float]
    ) -> PlatformKeeper | None:
        """With platforms, the keeper of their threads (roster, callbacks, hints), which
        changes the fleet through `FleetAccess`; None without."""
        if parts is None:
            return None
        from producer.platform.keeper import FleetAccess
        from producer.platform.wiring import platform_keeper

        return platform_keeper(
            parts,
            self._settings,
            fleet=FleetAccess(
                apply_roster=self._apply_roster,
                refresher=self.refresher,
                wake=lambda refresher: self.scheduler.wake(refresher.key),
                forget=self._forget,
                is_leader=lambda: self.leadership.is_leader,
            ),
            redis_client=self._redis,
            audit=self.audit,
            stop=self._stop,
            clock=clock,
        )

    def _succession(self, keys: KeyLayout, clock: Callable[[], float]) -> Succession:
        return Succession(
            leadership=self.leadership,
            clock_skew=self.clock_skew,
            follower=self.follower,
            fleet=self.fleet,
            scheduler=self.scheduler,
            store=self.store,
            codec=self._codec,
            redis_client=self._redis,
            keys=keys,
            producer_id=self._settings.producer_id,
            follow_interval_s=self._settings.follow_interval_s,
            clock=clock,
            stop=self._stop,
        )

    # ------------------------------------------------------------ credentials
    @property
    def refreshers(self) -> list[AppRefresher]:
        return self.fleet.all()

    def refresher(
        self, app_id: str, kind: TokenKind = TokenKind.ACCESS_TOKEN
    ) -> AppRefresher | None:
        return self.fleet.get(app_id, kind)

    def _task_of(self, refresher: AppRefresher) -> Callable[[], float]:
        """What the scheduler runs when `refresher` is due (`scheduled_step`)."""
        return scheduled_step(refresher, self.fleet, self.scheduler)

    # ------------------------------------------------------------ lifecycle
    def start(self) -> ProducerService:
        self.publisher.start()
        self.requests.start()
        # A restart adopts what Redis holds in one batch before any credential steps.
        self.succession.follow()
        self.pool.start()
        for refresher in self.refreshers:
            self.scheduler.add(refresher.key, self._task_of(refresher))
        self.scheduler.start()
        for thread in self.succession.threads:
            thread.start()
        if self.platform is not None:
            self.platform.start()
        return self

    def request_stop(self) -> None:
        """Ask every loop to stop. Not from a signal handler: it takes locks the interrupted
        thread may hold (`producer.signals` says why)."""
        self._stop.set()
        self.succession.wake_follower()

    def close(self, timeout_s: float = 1.5) -> None:
        """Stop all threads, release the lease, giving it all `timeout_s`. Idempotent.

        A worker blocked in an upstream call is a daemon thread and is abandoned; its late
        write is fenced off, since the lease is released.
        """
        self.request_stop()
        if self.platform is not None:
            self.platform.wake()
        deadline = time.monotonic() + timeout_s

        def left(share: float = 1.0) -> float:
            return max(0.05, (deadline - time.monotonic()) * share)

        self.scheduler.stop(left(0.2))
        self.pool.close(left(0.3))
        platform_threads = [] if self.platform is None else self.platform.threads
        for thread in [*self.succession.threads, *platform_threads]:
            if thread.is_alive():
                thread.join(left(0.3))
        self.leadership.release()
        self.requests.close(left(0.5))
        self.publisher.close(left())
        # Last: an abandoned worker's late call then fails fast instead of leaking a socket.
        if self._owned_upstream is not None:
            self._owned_upstream.close()
        if self._owned_redis is not None:
            self._owned_redis.close()

    # ------------------------------------------------------------ apps
    def reload(self, apps: Sequence[AppConfig]) -> Reloaded:
        """Serve `apps` from now on (`Fleet.apply`): new ones are fetched at once, removed
        ones are no longer refreshed (their snapshot expires by itself), changed ones use
        the new configuration from their next fetch; unchanged ones are untouched."""
        with self._apply_lock:
            self._file_apps = list(apps)
            result = self._apply()
        self.control.serve(apps)
        self.retry_failing()
        return result

    def _served_apps(self) -> list[AppConfig]:
        """The apps file's apps, the registry's stored apps, then the platforms' credentials;
        an app id already served wins, with an error line (two must not share a Redis key)."""
        if self.platform is None:
            return self._file_apps
        roster = self.platform.roster
        served = list(self._file_apps)
        taken = {app.app_id for app in served}
        for source, apps in (("stored app", roster.stored_apps()), ("platform", roster.apps())):
            clashing = [app.app_id for app in apps if app.app_id in taken]
            if clashing:
                log.error(
                    "%s(s) %s not served: an app of that id is served already",
                    source,
                    ", ".join(clashing[:10]),
                )
            fresh = [app for app in apps if app.app_id not in taken]
            served.extend(fresh)
            taken.update(app.app_id for app in fresh)
        return served

    def _apply(self) -> Reloaded:
        """Serve exactly `_served_apps()` (call with `_apply_lock` held)."""
        result = self.fleet.apply(self._served_apps())
        for refresher in result.dropped:
            self.scheduler.remove(refresher.key)
            self._codec.forget(*refresher.key)
        for refresher in result.new:
            self.scheduler.add(refresher.key, self._task_of(refresher))
        if self.leadership.is_leader and (result.added or result.removed):
            self.succession.announce()
        return result

    def _apply_roster(self) -> None:
        """The platform roster changed (from a platform thread)."""
        with self._apply_lock:
            result = self._apply()
        if result.added or result.removed:
            log.info(
                "platform credentials: %d added, %d removed",
                len(result.added),
                len(result.removed),
            )

    def _forget(self, app_id: str) -> None:
        """Delete the snapshots of an app no longer served (a revoked authorizer)."""
        for kind in TokenKind:
            try:
                self.store.forget(app_id, kind)
            except StoreError as exc:
                log.warning("%s: its %s snapshot not deleted: %s", app_id, kind, exc)

    def retry_failing(self) -> int:
        """Fetch every credential whose last fetch failed now, instead of after its backoff
        (SIGHUP: the operator's "try now"); returns how many."""
        failing = [r for r in self.fleet.all() if r.retry_now()]
        for refresher in failing:
            self.scheduler.wake(refresher.key)
        if failing:
            log.info("retrying %d credential(s) whose last fetch failed now", len(failing))
        return len(failing)

    # ------------------------------------------------------------ events
    def _worth_handling(self, request: RefreshRequest) -> bool:
        """From the listener thread, before the sender is charged: the request is about a
        credential served here and its current or a recent token (any producer, leader or
        standby, holds those: a standby follows Redis)."""
        refresher = self.refresher(request.app_id, request.kind)
        return refresher is not None and refresher.knows_token(request.token_sha256)

    def _on_request(self, request: RefreshRequest) -> None:
        """From the listener thread: hand a request to the refresher of its credential
        (a ticket's report re-fetches the ticket, not the token), if we lead."""
        refresher = self.refresher(request.app_id, request.kind)
        if refresher is None:
            log.debug(
                "ignoring a refresh request for %s/%s: not served here",
                request.app_id,
                request.kind,
            )
            return
        if not self.leadership.may_fetch(refresher.app.token_api):
            return  # standbys hear every request too; the leader answers
        log.debug("refresh requested for %s by %s", request.app_id, request.requester)
        refresher.request_refresh(request)
        self.scheduler.wake(refresher.key)

    def _submit_refresh(self, item: OperatorRefresh) -> str | None:
        """From the listener thread: queue an operator's refresh on its credential's
        refresher and wake it; why not, or None."""
        request = item.request
        refresher = self.refresher(request.app_id, request.kind)
        if refresher is None:
            return f"{request.app_id}/{request.kind} is not in this producer's apps file"
        if not refresher.operator_refresh(item):
            return "too many operator refreshes of it are waiting: ask again later"
        self.scheduler.wake(refresher.key)
        return None

    def _on_leadership(self, leading: bool) -> None:
        """From the lease thread (`Succession.on_leadership`)."""
        self.succession.on_leadership(leading)
