"""`TokenClient`: the subscriber-side API every service uses.

    with TokenClient.from_env() as tokens:
        token = tokens.get_token("wx1234567890abcdef")

`get_token()` answers from memory, with no I/O once a token is held, and never returns a
token past its `expires_at`. Updates arrive pushed over RabbitMQ; the Redis snapshot
covers a late start and broker outages. The highest version always wins.

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
from dataclasses import asdict, dataclass
from types import TracebackType
from typing import Literal, Self

import redis

from ._cache import Offer, TokenCache
from ._callbacks import CallbackThread, UpdateCallback
from ._rejections import rejection_reason
from ._subscriber import Subscriber
from ._transport import AttachableTransport, Transport
from .errors import InvalidUpdate, StoreError, TokenUnavailable
from .settings import ClientSettings, load_settings
from .snapshot import SnapshotReader, connect_redis
from .wire.keys import KeyLayout
from .wire.refresh_request import (
    REQUEST_MESSAGE_TYPE,
    RefreshRequest,
    fingerprint,
    requests_exchange,
    safe_requester,
)
from .wire.signing import codec_from_settings
from .wire.update import TokenKind, TokenUpdate

log = logging.getLogger(__name__)

#: A process reports one token at most this often (seconds); the leader coalesces the rest.
REPORT_EVERY_S = 30.0

#: A held token this close to expiry (share of its lifetime, capped) with no successor
#: pushed makes the subscriber read the Redis snapshot; the producer refreshes earlier.
OVERDUE_SHARE = 0.1
OVERDUE_MAX_S = 150.0


@dataclass
class ClientStats:
    """What the client did with what it received; `rejected` are invalid bytes.

    The client counts under a lock; read a consistent copy with `TokenClient.stats_dict()`.
    """

    accepted: int = 0
    stale: int = 0
    expired: int = 0
    rejected: int = 0
    snapshot_reads: int = 0
    snapshot_failures: int = 0


Counter = Literal["accepted", "stale", "expired", "rejected", "snapshot_reads", "snapshot_failures"]


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
        self._trusted_publishers = self.settings.trusted_publisher_names()
        self._owns_redis = redis_client is None
        self._redis = redis_client or connect_redis(
            self.settings.redis_url,
            timeout_s=self.settings.redis_timeout_s,
            tls=self.settings.redis_tls,
        )
        self._snapshot = SnapshotReader(
            self._redis, KeyLayout(self.settings.key_prefix), self._codec
        )
        self._clock = clock
        self._cache = TokenCache(clock)
        self._callbacks = CallbackThread()
        # Offering to the cache and queueing the callbacks happen as one step, so the
        # callbacks see updates in the order the cache took them, whichever thread fed them.
        self._offer_lock = threading.Lock()
        self._stats_lock = threading.Lock()
        self._lock = threading.Lock()
        self._started = False
        self._closed = False
        self.last_store_error: str | None = None
        self._reports: dict[tuple[str, TokenKind, str], float] = {}
        # The message bytes of each held update, both ways (see `_remember_body`); looked
        # up without a lock (one dict read), changed under `_bodies_lock`.
        self._bodies_lock = threading.Lock()
        self._held_bodies: dict[bytes, tuple[str, TokenKind]] = {}
        self._body_of: dict[tuple[str, TokenKind], bytes] = {}
        self.stats = ClientStats()
        #: Rejected updates by reason (`_rejections.REASONS`), for metrics; counted under
        #: the stats lock, read a copy with `rejections_dict()`.
        self.rejections: dict[str, int] = {}
        self._name = name
        self._rand = rand
        self._subscriber = self._new_subscriber()
        _renew_in_forked_children(self)

    def _new_subscriber(self) -> Transport:
        if self._transport is not None:
            self._transport.attach(
                on_body=self._on_body,
                read_snapshot=self.refresh_from_snapshot,
                snapshot_wanted=self._successor_overdue,
                callbacks_idle=lambda timeout_s: self._callbacks.wait_idle(timeout_s),
            )
            return self._transport
        return Subscriber(
            self.settings,
            on_body=self._on_message,
            read_snapshot=self.refresh_from_snapshot,
            snapshot_wanted=self._successor_overdue,
            connection_name=self._name or f"wxtoken-client/{socket.gethostname()}-{os.getpid()}",
            rand=self._rand,
        )

    @classmethod
    def from_env(cls, **overrides: object) -> TokenClient:
        """Settings from the `WXTOKEN_*` variables (see the README); raises `ConfigError`."""
        return cls(load_settings(ClientSettings, **overrides))

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
        self._offer_lock = threading.Lock()
        self._stats_lock = threading.Lock()
        # The parent's callback thread does not exist here; its queue stays the parent's.
        self._callbacks = CallbackThread(self._callbacks._callbacks)  # no lock: one thread
        self._bodies_lock = threading.Lock()
        inherited = self._cache
        self._cache = TokenCache(self._clock)
        for update in list(inherited._updates.values()):  # no lock: one thread runs now
            self._cache.offer(update)
        if self._owns_redis:
            self._redis = connect_redis(
                self.settings.redis_url,
                timeout_s=self.settings.redis_timeout_s,
                tls=self.settings.redis_tls,
            )
            self._snapshot = SnapshotReader(
                self._redis, KeyLayout(self.settings.key_prefix), self._codec
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

    def wait_connected(self, timeout_s: float) -> bool:
        """Block until subscribed to the exchange (for tests and start-up checks)."""
        return self._subscriber.wait_connected(timeout_s)

    # ------------------------------------------------------------ reading
    def get_token(
        self, app_id: str, timeout: float = 5.0, *, kind: TokenKind | str = TokenKind.ACCESS_TOKEN
    ) -> str:
        """The current token string; waits up to `timeout` s if none is held.

        `kind` is a `TokenKind` or its value; an unknown one raises `ValueError`."""
        kind = TokenKind.parse(kind)
        update = self._cache.current(app_id, kind)
        if update is not None:
            return update.value
        return self._wait(app_id, kind, timeout).value

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
        return self._wait(app_id, kind, timeout)

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
    ) -> bool:
        """Tell the producers WeChat rejected `token` (errcode 40001, 40014 or 42001), or,
        with `kind` a ticket ("jsapi", ...), that a signature made with it was refused.

        The leader refreshes it once, within WeChat's limits, or re-publishes the current
        token if this one was already replaced; the new token then arrives like any other.
        Only the token's SHA-256 is sent. Returns at once: True when a request went out,
        False when none was needed (a different token is already held, or this process
        reported this token in the last 30 s) or the broker is unreachable (the Redis
        snapshot is read instead). A malformed `app_id` raises `ValueError`.
        """
        kind = TokenKind.parse(kind)
        held = self._cache.held(app_id, kind)
        if held is not None and held.value != token:
            return False  # already replaced here: get_token() returns the newer one
        key = (app_id, kind, fingerprint(token))
        now_m = time.monotonic()
        with self._lock:
            self._reports = {k: t for k, t in self._reports.items() if now_m - t < REPORT_EVERY_S}
            if key in self._reports:
                return False
            self._reports[key] = now_m
        request = RefreshRequest.for_token(
            app_id,
            token,
            kind=kind,
            requester=safe_requester(f"client:{socket.gethostname()}-{os.getpid()}"),
            now_s=self._clock(),
            reported_version=held.version if held is not None else None,
            reason=reason,
        )
        sent = self._subscriber.send(
            requests_exchange(self.settings.exchange), request.encode(), REQUEST_MESSAGE_TYPE
        )
        if not sent:
            log.warning("could not report %s/%s rejected: broker unreachable", app_id, kind)
            self._read_one(app_id, kind)
        return sent

    def _wait(self, app_id: str, kind: TokenKind, timeout_s: float) -> TokenUpdate:
        if not self._started:
            self.start()
        self._read_one(app_id, kind)
        update = self._cache.wait_for(app_id, kind, timeout_s)
        if update is None:
            raise TokenUnavailable(self._why_unavailable(app_id, kind, timeout_s))
        return update

    def _why_unavailable(self, app_id: str, kind: TokenKind, timeout_s: float) -> str:
        held = self._cache.held(app_id, kind)
        if held is not None:
            what = f"the held {kind} v{held.version} expired at {held.expires_at:.0f}"
        else:
            what = f"no {kind} for app {app_id!r}"
        broker = (
            "broker connected"
            if self.connected
            else (f"broker unreachable ({self._subscriber.last_error or 'connecting'})")
        )
        if self.last_store_error is not None:
            store = f"Redis unreachable ({self.last_store_error})"
        else:
            store = "Redis has no valid snapshot for it (is a producer running for this app?)"
        return f"{what} and none arrived within {timeout_s:g} s: {store}; {broker}"

    # ------------------------------------------------------------ feeding
    def refresh_from_snapshot(self) -> None:
        """Read every known app's snapshot from Redis and keep what is newer."""
        self._count("snapshot_reads")
        try:
            found = self._snapshot.read_many_raw(self._snapshot.known())
        except StoreError as exc:
            self._store_failed(exc)
            return
        self.last_store_error = None
        for (app_id, kind), raw in found.items():
            if raw is None or raw in self._held_bodies:
                continue  # nothing stored, or exactly what is held
            try:
                update = self._snapshot.decode(raw)
            except InvalidUpdate as exc:
                self._reject(f"snapshot of {app_id}/{kind}", exc)
                continue
            self._offer(update, origin="snapshot")
            self._remember_body(update, raw)

    def _read_one(self, app_id: str, kind: TokenKind) -> None:
        try:
            update = self._snapshot.read(app_id, kind)
        except StoreError as exc:
            self._store_failed(exc)
            return
        except InvalidUpdate as exc:
            self._reject(f"snapshot of {app_id}/{kind}", exc)
            return
        self.last_store_error = None
        if update is not None:
            self._offer(update, origin="snapshot")

    def _successor_overdue(self) -> bool:
        """True when a held token is in the last tenth of its life (at most 150 s) with no
        successor pushed: the producer refreshes earlier, so a publish went missing. A token
        dead for longer than its lifetime (an app no longer served) stops counting."""
        now_s = self._clock()
        for update in self._cache.snapshot().values():
            lifetime_s = update.expires_at - update.issued_at
            left_s = update.seconds_left(now_s)
            if -lifetime_s < left_s < min(OVERDUE_SHARE * lifetime_s, OVERDUE_MAX_S):
                return True
        return False

    def _store_failed(self, exc: StoreError) -> None:
        self._count("snapshot_failures")
        if self.last_store_error is None:
            log.warning("Redis snapshot unavailable: %s", exc)
        self.last_store_error = str(exc)

    def _on_message(self, body: bytes, user_id: str | None = None) -> None:
        """A message, on the subscriber's own thread: callbacks may run right here."""
        self._on_body(body, user_id, inline=True)

    def _on_body(self, body: bytes, user_id: str | None = None, *, inline: bool = False) -> None:
        trusted = self._trusted_publishers
        if trusted and user_id not in trusted:
            # RabbitMQ guarantees user_id is the publisher's own login; this one may not push.
            self._reject("message", InvalidUpdate(f"published by untrusted user {user_id!r}"))
            return
        if body in self._held_bodies:
            # The exact bytes of an update held and verified already: a routine re-publish,
            # dropped without checking its signature again.
            self._count("stale")
            return
        try:
            update = self._codec.decode(body)
        except InvalidUpdate as exc:
            self._reject("message", exc)
            return
        self._offer(update, origin="broker", inline=inline)
        self._remember_body(update, body)

    def _remember_body(self, update: TokenUpdate, body: bytes) -> None:
        """Keep `body` (a message, or the bytes Redis stores: the producer writes what it
        publishes) as the bytes of the held update of its app and kind, if it is that one."""
        key = (update.app_id, update.kind)
        held = self._cache.held(*key)
        if held is None or (held is not update and held != update):
            return
        with self._bodies_lock:
            old = self._body_of.get(key)
            if old is not None:
                self._held_bodies.pop(old, None)
            self._body_of[key] = body
            self._held_bodies[body] = key

    def _reject(self, what: str, exc: InvalidUpdate) -> None:
        reason = rejection_reason(exc)
        with self._stats_lock:
            self.stats.rejected += 1
            self.rejections[reason] = self.rejections.get(reason, 0) + 1
        log.warning("rejected %s: %s", what, exc)

    def _offer(self, update: TokenUpdate, *, origin: str, inline: bool = False) -> None:
        """Offer to the cache and hand an accepted update to the callbacks. `inline` (the
        subscriber thread only, never a caller's) runs them right here when nothing else is
        queued, after the lock is released (a callback may feed the cache itself)."""
        claimed = False
        with self._offer_lock:
            outcome = self._cache.offer(update)
            if outcome is Offer.ACCEPTED:
                if inline:
                    claimed = self._callbacks.claim(update)
                else:
                    self._callbacks.submit(update)
        if claimed:
            self._callbacks.run_claimed(update)
        if outcome is Offer.STALE:
            self._count("stale")
            held = self._cache.held(update.app_id, update.kind)
            if held is not None and held.version > update.version:
                # Re-publishes of the held version are routine; an older one is not.
                log.warning(
                    "dropped %s from %s: older than the held v%d", update, origin, held.version
                )
            return
        if outcome is Offer.EXPIRED:
            self._count("expired")
            # A snapshot may simply be read at the end of its life; a message should not be.
            log.log(
                logging.WARNING if origin == "broker" else logging.DEBUG,
                "dropped expired %s from %s",
                update,
                origin,
            )
            return
        self._count("accepted")
        log.debug("accepted %s from %s", update, origin)

    def _count(self, counter: Counter) -> None:
        with self._stats_lock:
            setattr(self.stats, counter, getattr(self.stats, counter) + 1)

    def stats_dict(self) -> dict[str, int]:
        """A consistent copy of `stats`."""
        with self._stats_lock:
            return asdict(self.stats)

    def rejections_dict(self) -> dict[str, int]:
        """A consistent copy of `rejections` (rejected updates by reason)."""
        with self._stats_lock:
            return dict(self.rejections)


def _renew_in_forked_children(client: TokenClient) -> None:
    """Register `client._after_fork_in_child` for every later fork, via a weak reference."""
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
