"""The producer process: a lease thread, one refresher thread per app, one publisher thread.

Any number of producer processes may run against one Redis: the lease (`Leadership`)
decides which one fetches and publishes; the others follow Redis and take over when the
leader dies or stops. A clean stop releases the lease, so a standby takes over at once.
Refresh requests (passive refresh) arrive on every producer; only the leader acts on them.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Sequence

import redis

from consumer_lib.snapshot import connect_redis
from consumer_lib.wire.keys import KeyLayout
from consumer_lib.wire.refresh_request import RefreshRequest
from consumer_lib.wire.signing import codec_from_settings
from consumer_lib.wire.update import TokenKind

from .apps import AppConfig
from .audit import AuditLog
from .budget import RefreshBudget
from .control import ControlHandler, QuotaClearer, operator_keys
from .lease import Leadership
from .publishing import Publisher
from .refresher import AppRefresher, Fetcher, RefreshTiming
from .request_listener import RequestListener
from .settings import ProducerSettings
from .store import TokenStore
from .upstream_errors import UpstreamErrors
from .wechat import WeChatClient

log = logging.getLogger(__name__)

#: After an unexpected error in a refresher loop, wait this long before the next step.
CRASH_PAUSE_S = 5.0


def timing_from(settings: ProducerSettings) -> RefreshTiming:
    return RefreshTiming(
        margin_ratio=settings.refresh_margin_ratio,
        margin_max_s=settings.refresh_margin_max_s,
        republish_interval_s=settings.republish_interval_s,
        retry_base_s=settings.retry_base_s,
        retry_cap_s=settings.retry_cap_s,
        config_retry_s=settings.config_retry_s,
        quota_retry_base_s=settings.quota_retry_base_s,
        quota_retry_cap_s=settings.quota_retry_cap_s,
        takeover_s=settings.lease_ttl_s,
    )


class ProducerService:
    """Wires refreshers, store and publisher together; `start()`, then `close()`."""

    def __init__(
        self,
        settings: ProducerSettings,
        apps: Sequence[AppConfig],
        *,
        redis_client: redis.Redis | None = None,
        fetcher: Fetcher | None = None,
        publisher: Publisher | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._stop = threading.Event()
        client = redis_client or connect_redis(
            settings.redis_url, timeout_s=settings.redis_timeout_s, tls=settings.redis_tls
        )
        keys = KeyLayout(settings.key_prefix)
        codec = codec_from_settings(settings, must_sign=True)
        self.store = TokenStore(client, keys, codec)
        self._wakes = [threading.Event() for _ in apps]
        # The owner id is unique per process run, even where hostnames and pids repeat.
        self.leadership = Leadership(
            client,
            lease_key=keys.leader,
            epoch_key=keys.leader_epoch,
            owner=f"{settings.producer_id}#{random.getrandbits(32):08x}",
            ttl_s=settings.lease_ttl_s,
            on_change=lambda leading: self._wake_refreshers(),
        )
        self.publisher = publisher or Publisher(
            settings.amqp_url,
            settings.exchange,
            tls=settings.amqp_tls,
            sender=f"wxtoken-producer/{settings.producer_id}",
            heartbeat_s=settings.heartbeat_s,
            reconnect_max_s=settings.reconnect_max_s,
            clock=clock,
            codec=codec,
        )
        upstream: Fetcher = fetcher or WeChatClient(
            settings.wechat_base_url,
            connect_timeout_s=settings.http_connect_timeout_s,
            read_timeout_s=settings.http_read_timeout_s,
        )
        timing = timing_from(settings)
        budget = RefreshBudget(client, keys, clock=clock)
        self.budget = budget  # read by producer.metrics
        #: One audit trail for every app (`{prefix}:audit`); recording never raises.
        self.audit = AuditLog(client, keys, clock=clock)
        #: The last failed fetch per credential, for `wxtoken status`; never raises.
        self.upstream_errors = UpstreamErrors(client, keys, clock=clock)
        #: Operators' signed control requests (`wxtoken quota clear`); the leader acts.
        self.control = ControlHandler(
            client,
            keys,
            apps=apps,
            upstream=upstream if isinstance(upstream, QuotaClearer) else None,
            verify_keys=operator_keys(settings),
            is_leader=lambda: self.leadership.is_leader,
            producer_id=settings.producer_id,
            audit=self.audit,
            clock=clock,
        )
        self.refreshers = [
            AppRefresher(
                app,
                fetcher=upstream,
                store=self.store,
                publish=self.publisher.publish,
                producer_id=settings.producer_id,
                timing=timing,
                gate=self.leadership,
                budget=budget,
                clock=clock,
                audit=self.audit,
                on_fetch_failed=self.upstream_errors.record,
            )
            for app in apps
        ]
        self._by_app = {
            r.app.app_id: (r, wake) for r, wake in zip(self.refreshers, self._wakes, strict=True)
        }
        self.requests = RequestListener(
            settings.amqp_url,
            settings.exchange,
            tls=settings.amqp_tls,
            on_request=self._on_request,
            on_control=self.control.handle,
            connection_name=f"wxtoken-producer/{settings.producer_id}/requests",
            heartbeat_s=settings.heartbeat_s,
            reconnect_max_s=settings.reconnect_max_s,
        )
        self._threads = [
            threading.Thread(target=self._run_lease, name="lease", daemon=True),
            *(
                threading.Thread(
                    target=self._run_refresher,
                    args=(refresher, wake),
                    name=f"refresh-{refresher.app.app_id}",
                    daemon=True,
                )
                for refresher, wake in zip(self.refreshers, self._wakes, strict=True)
            ),
        ]

    def start(self) -> ProducerService:
        self.publisher.start()
        self.requests.start()
        for thread in self._threads:
            thread.start()
        return self

    def wait(self, timeout_s: float | None = None) -> bool:
        """Block until `close()` is called (e.g. from a signal handler); True if it was."""
        return self._stop.wait(timeout_s)

    def request_stop(self) -> None:
        """Ask every loop to stop; safe from a signal handler."""
        self._stop.set()
        self._wake_refreshers()

    def close(self, timeout_s: float = 1.5) -> None:
        """Stop all threads, release the lease, giving it all `timeout_s`. Idempotent.

        A refresher blocked in an upstream call is a daemon thread and is abandoned; its
        late write is fenced off, since the lease is released.
        """
        self.request_stop()
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            if thread.is_alive():
                thread.join(max(0.0, deadline - time.monotonic()))
        self.leadership.release()
        self.requests.close(max(0.1, deadline - time.monotonic()))
        self.publisher.close(max(0.1, deadline - time.monotonic()))

    def _on_request(self, request: RefreshRequest) -> None:
        """From the listener thread: hand a request to its app's refresher, if we lead."""
        found = self._by_app.get(request.app_id)
        if found is None or request.kind is not TokenKind.ACCESS_TOKEN:
            log.debug(
                "ignoring a refresh request for %s/%s: not served here",
                request.app_id,
                request.kind,
            )
            return
        refresher, wake = found
        if not self.leadership.may_fetch(refresher.app.token_api):
            return  # standbys hear every request too; the leader answers
        log.info("refresh requested for %s by %s", request.app_id, request.requester)
        refresher.request_refresh(request)
        wake.set()

    def _wake_refreshers(self) -> None:
        for wake in self._wakes:
            wake.set()

    def _run_lease(self) -> None:
        while not self._stop.is_set():
            try:
                delay_s = self.leadership.tick()
            except Exception:
                log.exception("unexpected error in the lease loop")
                delay_s = 1.0
            self._stop.wait(delay_s)

    def _run_refresher(self, refresher: AppRefresher, wake: threading.Event) -> None:
        jitter = random.Random()
        # Spread the first fetches of many apps a little.
        self._stop.wait(jitter.random() * 0.2)
        while not self._stop.is_set():
            try:
                delay_s = refresher.step()
            except Exception:
                # Never let one bad step end the loop: log it and try again later.
                log.exception("%s: unexpected error in the refresh loop", refresher.app.app_id)
                delay_s = CRASH_PAUSE_S
            wake.wait(delay_s)  # a leadership change or a stop ends the wait early
            wake.clear()
