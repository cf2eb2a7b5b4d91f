"""`TokenClient`: the subscriber-side API every service uses.

    with TokenClient.from_env() as tokens:
        token = tokens.get_token("wx1234567890abcdef")

`get_token()` answers from memory, with no I/O once a token is held, and never returns a
token past its expiry on this host's clock (`cache`, `offset`). Updates arrive pushed over
RabbitMQ; the Redis snapshot covers a late start and broker outages. The highest version
wins (unless the held token has expired: see `cache`). With no valid token held, a read
waits for one, then raises `TokenUnavailable` saying why none came.

Forking (gunicorn `--preload`, multiprocessing's fork): a client made, even started,
before `os.fork()` works in every child. An `os.register_at_fork` hook, held through a
weak reference so it keeps no client alive, runs in each child and gives the client there
its own background thread and broker connection (a new `Subscriber`, started if the
parent's was), its own Redis connections (a new client when we built the parent's; a
client passed in is left to redis-py, whose pools notice the new pid and reconnect) and
fresh locks (one held by a parent thread at the fork would never be released). The tokens
held are kept: they are still valid data. The parent's thread does not exist in the
child; its pika connection object is dropped there, never closed, since closing would
write to the socket the parent still uses.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
import weakref
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self, cast

import redis

from ..errors import TokenUnavailable
from ..settings import ClientSettings, GatewayClientSettings, load_settings
from ..snapshot import SnapshotReader, connect_redis
from ..transport import AttachableTransport, TokenReportingTransport, Transport
from ..wire.keys import KeyLayout
from ..wire.signing import codec_from_settings
from ..wire.update import TokenKind, TokenUpdate
from .cache import TokenCache
from .callbacks import CallbackThread, UpdateCallback
from .feeding import UpdateFeed
from .offset import ClockOffset
from .overdue import OVERDUE_MAX_S, OVERDUE_SHARE
from .reporting import REPORT_EVERY_S, InvalidReporter, ReportOutcome
from .stats import ClientCounters, ClientStats
from .subscriber import Subscriber

__all__ = ["OVERDUE_MAX_S", "OVERDUE_SHARE", "REPORT_EVERY_S", "ClientStats", "TokenClient"]

log = logging.getLogger(__name__)


class TokenClient:
    """Holds the newest token of every app in memory, kept current by a background thread."""

    def __init__(
        self,
        settings: ClientSettings | None = None,
        *,
        redis_client: redis.Redis | None = None,
        clock: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
        name: str | None = None,
        transport: AttachableTransport | None = None,
    ) -> None:
        """`transport` replaces the RabbitMQ subscriber (see `consumer_lib.testing`)."""
        self._transport = transport
        self.settings = settings or ClientSettings()
        # Verify keys are required (unless explicitly insecure): fail here, not on receipt.
        self._codec = codec_from_settings(self.settings)
        self._owns_redis = redis_client is None
        self._redis = redis_client or self._connect_redis()
        self._clock = clock
        #: This host's clock minus the producer's, from the messages' send times.
        self._offset = ClockOffset()
        self._cache = TokenCache(clock, self._offset)
        self._callbacks = CallbackThread()
        self._counters = ClientCounters()  # stats_dict() adds the offset's figures
        self._feed = UpdateFeed(
            cache=self._cache,
            callbacks=self._callbacks,
            snapshot=self._snapshot_reader(),
            codec=self._codec,
            trusted_publishers=self.settings.trusted_publisher_names(),
            counters=self._counters,
            offset=self._offset,
            clock=clock,
        )
        self._reporter = InvalidReporter(self.settings.exchange, clock=clock)
        self._lock = threading.Lock()
        self._started = False
        self._closed = False
        self.stats: ClientStats = self._counters.stats
        #: Rejected updates by reason (`stats.REASONS`), for metrics; read a copy
        #: with `rejections_dict()`.
        self.rejections: dict[str, int] = self._counters.rejections
        self._name = name
        self._rand = rand
        self._subscriber = self._new_subscriber()
        _renew_in_forked_children(self)

    def _connect_redis(self) -> redis.Redis:
        return connect_redis(
            self.settings.redis_url,
            timeout_s=self.settings.redis_timeout_s,
            tls=self.settings.redis_tls,
        )

    def _snapshot_reader(self) -> SnapshotReader:
        return SnapshotReader(self._redis, KeyLayout(self.settings.key_prefix), self._codec)

    def _new_subscriber(self) -> Transport:
        """The transport, attached: the broker subscriber enters like any other."""
        transport = self._transport
        if transport is None:
            transport = self._new_broker_subscriber()
        transport.attach(
            on_body=self._on_body,
            read_snapshot=self.refresh_from_snapshot,
            snapshot_wanted=self._successor_overdue,
            callbacks_idle=lambda timeout_s: self._callbacks.wait_idle(timeout_s),
        )
        return transport

    def _new_broker_subscriber(self) -> Subscriber:
        # Reports made before the first connection wait for it (the stub sends at once).
        self._reporter.await_first_connection()
        subscriber: Subscriber | None = None

        def connected() -> None:
            if subscriber is not None:
                self._reporter.flush_pending(subscriber.send)

        subscriber = Subscriber(
            self.settings,
            on_connected=connected,
            connection_name=self._name or f"wxtoken-client/{socket.gethostname()}-{os.getpid()}",
            rand=self._rand,
        )
        return subscriber

    @classmethod
    def from_env(cls, **overrides: object) -> TokenClient:
        """Settings from the `WXTOKEN_*` variables (docs/operating.md, Configuration); raises
        `ConfigError`. With `WXTOKEN_GATEWAY_URL` set, fed by that gateway's stream
        (`over_http`)."""
        settings = load_settings(GatewayClientSettings, **overrides)
        if settings.gateway_url is not None:
            return cls.over_http(settings)
        return cls(settings)

    @classmethod
    def over_http(
        cls, settings: GatewayClientSettings, *, name: str | None = None, **kw: Any
    ) -> TokenClient:
        """A client fed by the stream of the gateway at `settings.gateway_url`, with no
        Redis and no broker: the stream's first events are the snapshot, each update is
        the producer's signed bytes (verified as a broker message), and `report_invalid`
        goes to the gateway's report route (`consumer_lib._client.http_transport`)."""
        from ..testing import EmptyRedis  # the snapshot is the stream's first events
        from .http_transport import GatewayStream

        label = name or f"wxtoken-client/{socket.gethostname()}-{os.getpid()}"
        return cls(
            settings,
            redis_client=cast(redis.Redis, EmptyRedis()),
            transport=GatewayStream.from_settings(settings, name=label),
            name=name,
            **kw,
        )

    # ------------------------------------------------------------ lifecycle
    def start(self) -> Self:
        """Start the background thread (idempotent). Returns at once."""
        with self._lock:
            if self._closed:
                raise RuntimeError("TokenClient is closed")
            if not self._started:
                self._started = True
                self._subscriber.start()
        return self

    def close(self) -> None:
        """Stop the background thread and drop the Redis connections. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._subscriber.close()
        self._callbacks.close()
        self._redis.close()

    def _after_fork_in_child(self) -> None:
        """Runs in a forked child, before `os.fork()` returns there (module docstring)."""
        if self._closed:
            return
        self._lock = threading.Lock()
        self._counters.renew_lock()
        self._reporter.renew_lock()
        # The parent's callback thread does not exist here; its queue stays the parent's.
        self._callbacks = CallbackThread(self._callbacks._callbacks)  # no lock: one thread
        self._offset.renew_lock()
        self._cache = self._cache.renewed()  # no lock: one thread runs now
        if self._owns_redis:
            self._redis = self._connect_redis()
        self._feed.after_fork(
            cache=self._cache, callbacks=self._callbacks, snapshot=self._snapshot_reader()
        )
        self._subscriber = self._new_subscriber()
        if self._started:
            self._subscriber.start()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def connected(self) -> bool:
        """True while updates are being pushed from the broker."""
        return self._subscriber.connected

    @property
    def broker_login_refused(self) -> str | None:
        """Why the broker refuses this client's login (wrong user or password, a vhost it
        may not use: a configuration error), None while it accepts or merely cannot be
        reached; the client keeps trying every 15 s."""
        return self._subscriber.login_refused

    def wait_connected(self, timeout_s: float) -> bool:
        """Block until subscribed to the exchange (for tests and start-up checks)."""
        return self._subscriber.wait_connected(timeout_s)

    @property
    def store_login_refused(self) -> str | None:
        """Why Redis refuses this client's login or a command it needs (a configuration
        error, naming the user and WXTOKEN_REDIS_URL); None once a snapshot read works."""
        return self._feed.store_login_refused

    @property
    def last_store_error(self) -> str | None:
        """Why the last Redis read failed; None once one succeeds."""
        return self._feed.last_store_error

    # ------------------------------------------------------------ counters
    def stats_dict(self) -> dict[str, int]:
        """A consistent copy of `stats`, with `clock_offset_ms` (this host's clock minus the
        producer's, as estimated; 0 before any message) and `invalid_sent_headers`."""
        return self._counters.stats_dict(self._offset)

    @property
    def clock_offset_s(self) -> float:
        """The offset applied to producer times (0 within the 1 s dead band)."""
        return self._offset.offset_s

    def rejections_dict(self) -> dict[str, int]:
        """A consistent copy of `rejections` (rejected updates by reason)."""
        return self._counters.rejections_dict()

    # ------------------------------------------------------------ reading
    def get_token(
        self, app_id: str, timeout: float = 5.0, *, kind: TokenKind | str = TokenKind.ACCESS_TOKEN
    ) -> str:
        """The current token string; waits up to `timeout` s if none is held.

        `kind` is a `TokenKind` or its value; an unknown one raises `ValueError`."""
        # The hot path: one dict read, one clock read. A kind's wire value finds its entry
        # too (`TokenKind` is a `StrEnum`); anything else takes the slow path and is parsed.
        cache = self._cache
        try:
            entry = cache.entries.get((app_id, kind))  # type: ignore[arg-type]
        except TypeError:  # unhashable: not a kind; `parse` below says so (ValueError)
            entry = None
        if entry is not None and self._clock() < entry[1]:
            return entry[0]
        kind = TokenKind.parse(kind)
        update = cache.current(app_id, kind)
        if update is not None:
            return update.value
        return self._wait(self.resolve_app_id(app_id), kind, timeout).value

    def resolve_app_id(self, app_id: str) -> str:
        """The credential app id a request for `app_id` reads: `app_id` itself, unless it is
        a third-party platform customer's own appid, for which exactly one platform's
        credential (``{component_appid}.{authorizer_appid}``) is held: that one. Held by
        several platforms: `ValueError` naming them (ask for one by its full app id). No
        I/O."""
        cache = self._cache
        if any(cache.held(app_id, kind) is not None for kind in TokenKind):
            return app_id
        served = cache.platforms_of(app_id)
        if not served:
            return app_id
        if len(served) > 1:
            raise ValueError(
                f"{app_id} has authorized several platforms here ({', '.join(sorted(served))}); "
                "ask for one of those app ids"
            )
        (only,) = served
        return only

    def get_ticket(self, app_id: str, ticket: TokenKind | str, timeout: float = 5.0) -> str:
        """The current ticket of `app_id`: "jsapi", "wx_card" (official accounts),
        "corp_jsapi", "agent_config" (WeCom), or the ticket's `TokenKind`. Waits like
        `get_token`; a name that is no ticket raises `ValueError`."""
        kind = TokenKind.parse(ticket)
        if not kind.is_ticket:
            raise ValueError(f"{kind} is not a ticket; use get_token() for it")
        return self.get_token(app_id, timeout, kind=kind)

    def get(
        self, app_id: str, timeout: float = 5.0, *, kind: TokenKind | str = TokenKind.ACCESS_TOKEN
    ) -> TokenUpdate:
        """The current update (token, version, expiry, source); waits like `get_token`."""
        kind = TokenKind.parse(kind)
        update = self._cache.current(app_id, kind)
        if update is not None:
            return update
        return self._wait(self.resolve_app_id(app_id), kind, timeout)

    def held_until(
        self, app_id: str, kind: TokenKind | str = TokenKind.ACCESS_TOKEN
    ) -> tuple[TokenUpdate, float] | None:
        """The held update of `app_id` and when it expires on this host's clock (the expiry
        `get_token()` checks: `expires_at` corrected by the clock offset, a snapshot's
        `PTTL`, never past its lifetime from receipt), while it is valid; None otherwise.
        No wait, no I/O: for servers that hand the expiry on (the gateway). A platform
        customer's own appid reads its platform's credential (`resolve_app_id`)."""
        kind = TokenKind.parse(kind)
        found = self._cache.valid(app_id, kind)
        if found is not None:
            return found
        resolved = self.resolve_app_id(app_id)
        return None if resolved == app_id else self._cache.valid(resolved, kind)

    def valid_count(self) -> int:
        """How many held tokens (all apps and kinds) are valid on this host's clock now."""
        return self._cache.valid_count()

    def held(self) -> dict[tuple[str, TokenKind], tuple[TokenUpdate, float]]:
        """Every held update by `(app_id, kind)`, with its seconds left on this host's
        clock (the expiry `get_token()` checks; negative once expired). A copy: no wait,
        no I/O (for metrics and status pages)."""
        return self._cache.seconds_left()

    def held_body(
        self, app_id: str, kind: TokenKind = TokenKind.ACCESS_TOKEN
    ) -> tuple[TokenUpdate, bytes] | None:
        """The held update and the exact signed bytes it arrived as (the producer's
        envelope), for passing it on unchanged (the gateway's stream); None when none is
        held. Valid or not: check `expires_at`."""
        return self._feed.held_body(app_id, kind)

    def on_update(self, callback: UpdateCallback) -> UpdateCallback:
        """Call `callback(update)` for each newer token, from the client's callback thread.

        Never from the thread calling `get_token()` or `get()`: callbacks run one at a time,
        in the order the updates were accepted, so an app's versions arrive rising.
        """
        self._callbacks.add(callback)
        return callback

    def report_invalid(
        self,
        app_id: str,
        token: str,
        *,
        kind: TokenKind | str = TokenKind.ACCESS_TOKEN,
        reason: str | None = None,
        requester: str | None = None,
    ) -> bool:
        """Tell the producers WeChat rejected `token` (errcode 40001, 40014 or 42001), or,
        with `kind` a ticket ("jsapi", ...), that a signature made with it was refused.
        `requester` names who asks in the producer's audit trail (default
        `client:<host>-<pid>`; characters outside `[A-Za-z0-9_.:@+=/-]` become `_`).

        The leader refreshes it once, within WeChat's limits, or re-publishes the current
        token if this one was already replaced; the new token then arrives like any other.
        Only the token's SHA-256 is sent. Returns at once: True when a request went out, or
        waits for the first broker connection (a report right after `start()`); False when
        none was needed (a different token is already held, or this process reported this
        token in the last 30 s) or the broker is unreachable (the Redis snapshot is read
        instead). `report_invalid_outcome` says which. A malformed `app_id` raises
        `ValueError`.
        """
        return self.report_invalid_outcome(
            app_id, token, kind=kind, reason=reason, requester=requester
        ).reported

    def report_invalid_outcome(
        self,
        app_id: str,
        token: str,
        *,
        kind: TokenKind | str = TokenKind.ACCESS_TOKEN,
        reason: str | None = None,
        requester: str | None = None,
    ) -> ReportOutcome:
        """`report_invalid`, returning what became of the report (`ReportOutcome`: sent,
        queued, not_current, coalesced, broker_unreachable)."""
        kind = TokenKind.parse(kind)
        send = self._subscriber.send
        transport = self._subscriber
        if isinstance(transport, TokenReportingTransport):  # no broker: it reports itself

            def send(exchange: str, body: bytes, message_type: str) -> bool:
                return transport.report_token(app_id, token, kind, reason)

        return self._reporter.report(
            app_id,
            token,
            kind,
            held=self._cache.held(app_id, kind),
            reason=reason,
            send=send,
            read_snapshot=self._feed.read_one,
            requester=requester,
        )

    def _wait(self, app_id: str, kind: TokenKind, timeout_s: float) -> TokenUpdate:
        """Read `app_id`'s snapshot once, then wait up to `timeout_s` for a valid update of
        `kind`; raises `TokenUnavailable`, saying why, when none arrives."""
        if not self._started:
            self.start()
        cache, feed, transport = self._cache, self._feed, self._subscriber
        feed.read_one(app_id, kind)
        update = cache.wait_for(app_id, kind, timeout_s)
        if update is None:
            raise TokenUnavailable(
                _why_unavailable(
                    app_id,
                    kind,
                    timeout_s,
                    held=cache.held(app_id, kind),
                    connected=transport.connected,
                    broker_error=transport.last_error,
                    store_error=feed.last_store_error,
                )
            )
        return update

    # ------------------------------------------------------------ feeding
    def refresh_from_snapshot(self) -> None:
        """Read every known app's snapshot from Redis and keep what is newer."""
        self._feed.refresh_from_snapshot()

    def _successor_overdue(self) -> bool:
        return self._cache.any_overdue()  # the cache of now (a forked child has its own)

    def _on_body(
        self, body: bytes, user_id: str | None = None, sent_s: float | None = None
    ) -> None:
        """A message from a transport's thread (the subscriber's, a stub's): callbacks go
        to the callback thread, never run here."""
        self._feed.on_body(body, user_id, sent_s)


def _why_unavailable(
    app_id: str,
    kind: TokenKind,
    timeout_s: float,
    *,
    held: TokenUpdate | None,
    connected: bool,
    broker_error: str | None,
    store_error: str | None,
) -> str:
    """The message of the `TokenUnavailable` raised after waiting `timeout_s` in vain."""
    if held is not None:
        what = f"the held {kind} v{held.version} expired at {held.expires_at:.0f}"
    else:
        what = f"no {kind} for app {app_id!r}"
    broker = (
        "broker connected" if connected else f"broker unreachable ({broker_error or 'connecting'})"
    )
    if store_error is not None:
        store = f"Redis unreachable ({store_error})"
    else:
        store = "Redis has no valid snapshot for it (is a producer running for this app?)"
    return f"{what} and none arrived within {timeout_s:g} s: {store}; {broker}"


def _renew_in_forked_children(client: TokenClient) -> None:
    """Register `client._after_fork_in_child` for every later fork, via a weak reference
    (module docstring)."""
    if not hasattr(os, "register_at_fork"):  # no fork on this platform
        return
    ref = weakref.ref(client)

    def after_in_child() -> None:
        alive = ref()
        if alive is None:
            return
        try:
            alive._after_fork_in_child()
        except Exception:
            log.exception("renewing the token client in the forked child %d failed", os.getpid())

    os.register_at_fork(after_in_child=after_in_child)
