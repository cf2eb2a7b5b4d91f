"""Feeding a `TokenClient`'s cache: pushed messages and Redis snapshot reads.

Both paths end in `UpdateFeed.offer`: the cache keeps the highest version, and an accepted
update goes to the `on_update` callbacks in the order the cache took it. The exact bytes of
each held update are remembered, so a routine re-publish (or an unchanged snapshot) is
dropped without verifying its signature again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from ..errors import InvalidUpdate, StoreError, StoreLoginRefused
from ..snapshot import SnapshotReader
from ..wire.signing import UpdateCodec
from ..wire.update import TokenKind, TokenSource, TokenUpdate
from .cache import Offer, TokenCache
from .callbacks import CallbackThread
from .offset import ABSURD_S, SAFETY_S, ClockOffset
from .stats import ClientCounters

log = logging.getLogger(__name__)


class UpdateFeed:
    """Verifies what arrives, offers it to the cache and queues the callbacks."""

    def __init__(
        self,
        *,
        cache: TokenCache,
        callbacks: CallbackThread,
        snapshot: SnapshotReader,
        codec: UpdateCodec,
        trusted_publishers: frozenset[str],
        counters: ClientCounters,
        offset: ClockOffset,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cache = cache
        self.offset = offset
        self._clock = clock
        self.callbacks = callbacks
        self.snapshot = snapshot
        self._codec = codec
        self._trusted = trusted_publishers
        self._counters = counters
        self.last_store_error: str | None = None
        #: Why Redis refuses this client's login or a command it needs, until a read works.
        self.store_login_refused: str | None = None
        # Offering to the cache and queueing the callbacks happen as one step, so the
        # callbacks see updates in the order the cache took them, whichever thread fed them.
        self._offer_lock = threading.Lock()
        # The message bytes of each held update, both ways (see `remember_body`); looked
        # up without a lock (one dict read), changed under `_bodies_lock`.
        self._bodies_lock = threading.Lock()
        self._held_bodies: dict[bytes, tuple[str, TokenKind]] = {}
        self._body_of: dict[tuple[str, TokenKind], bytes] = {}

    def after_fork(
        self, *, cache: TokenCache, callbacks: CallbackThread, snapshot: SnapshotReader
    ) -> None:
        """In a forked child: the child's own cache, callback thread and Redis reader, fresh
        locks; the bytes held stay (they are still the held updates')."""
        self.cache = cache
        self.callbacks = callbacks
        self.snapshot = snapshot
        self._offer_lock = threading.Lock()
        self._bodies_lock = threading.Lock()

    # ------------------------------------------------------------ messages
    def on_body(
        self,
        body: bytes,
        user_id: str | None = None,
        sent_s: float | None = None,
    ) -> None:
        """A message from the broker; `sent_s` is the send time from its unsigned header
        (None when absent), a sample of the clock offset only when the body is a verified
        new version of the producer's own (`_sample_offset`)."""
        trusted = self._trusted
        if trusted and user_id not in trusted:
            # RabbitMQ guarantees user_id is the publisher's own login; this one may not push.
            self._counters.reject(
                "message", InvalidUpdate(f"published by untrusted user {user_id!r}")
            )
            return
        received_s = self._clock()
        if body in self._held_bodies:
            # The exact bytes of an update held and verified already: a routine re-publish,
            # dropped without checking its signature again.
            self._counters.count("stale")
            return
        self._counters.count("verified")
        try:
            update = self._codec.decode(body)
        except InvalidUpdate as exc:
            self._counters.reject("message", exc)
            return
        self._sample_offset(update, sent_s, received_s)
        # Never held longer than its signed lifetime from now, whatever the offset says
        # (less `SAFETY_S`, as the offset: the delivery delay is in the receipt time).
        cap_s = received_s + (update.expires_at - update.issued_at) - SAFETY_S
        self.offer(update, origin="broker", cap_s=cap_s, body=body)

    def _sample_offset(self, update: TokenUpdate, sent_s: float | None, received_s: float) -> None:
        """Take `sent_s` as a clock sample only from a verified update of the producer's
        refresh (an override carries the operator's clock) with a version newer than the
        one held (a re-publish or a replay may carry any header); `ClockOffset.sample`
        checks it against the signed life and bounds it. Taken before the offer, so a
        producer clock behind ours does not make the update look expired on arrival."""
        if update.source is not TokenSource.REFRESH:
            return
        held = self.cache.held(update.app_id, update.kind)
        if held is not None and held.version >= update.version:
            return
        self.offset.sample(
            sent_s, received_s, issued_at_s=update.issued_at, expires_at_s=update.expires_at
        )

    # ------------------------------------------------------------ the snapshot
    def refresh_from_snapshot(self) -> None:
        """Read every known app's snapshot from Redis and keep what is newer."""
        self._counters.count("snapshot_reads")
        try:
            found = self.snapshot.read_many_raw_ttl(self.snapshot.known())
        except StoreError as exc:
            self._store_failed(exc)
            return
        received_s = self._clock()
        self.last_store_error = self.store_login_refused = None
        for (app_id, kind), (raw, ttl_ms) in found.items():
            if raw is None or raw in self._held_bodies:
                continue  # nothing stored, or exactly what is held
            self._counters.count("verified")
            try:
                update = self.snapshot.decode(raw)
            except InvalidUpdate as exc:
                self._counters.reject(f"snapshot of {app_id}/{kind}", exc)
                continue
            self.offer(
                update,
                origin="snapshot",
                deadline_s=self._deadline(update, received_s, ttl_ms),
                body=raw,
            )

    def read_one(self, app_id: str, kind: TokenKind) -> None:
        """Read one app's snapshot (a caller waiting for it, a broker that is away)."""
        try:
            ((raw, ttl_ms),) = self.snapshot.read_many_raw_ttl([(app_id, kind)]).values()
        except StoreError as exc:
            self._store_failed(exc)
            return
        received_s = self._clock()
        self.last_store_error = self.store_login_refused = None
        if raw is None:
            return
        self._counters.count("verified")
        try:
            update = self.snapshot.decode(raw)
        except InvalidUpdate as exc:
            self._counters.reject(f"snapshot of {app_id}/{kind}", exc)
            return
        self.offer(
            update,
            origin="snapshot",
            deadline_s=self._deadline(update, received_s, ttl_ms),
            body=raw,
        )

    def _deadline(self, update: TokenUpdate, received_s: float, ttl_ms: int | None) -> float | None:
        return snapshot_deadline(update, received_s, ttl_ms, self.offset.offset_s)

    def _store_failed(self, exc: StoreError) -> None:
        self._counters.count("snapshot_failures")
        if isinstance(exc, StoreLoginRefused):  # a configuration error: one ERROR line
            if self.store_login_refused != str(exc):
                log.error("Redis snapshot unavailable: %s", exc)
            self.store_login_refused = str(exc)
        elif self.last_store_error is None:
            log.warning("Redis snapshot unavailable: %s", exc)
        self.last_store_error = str(exc)

    # ------------------------------------------------------------ the cache
    def remember_body(self, update: TokenUpdate, body: bytes) -> None:
        """Keep `body` (a message, or the bytes Redis stores: the producer writes what it
        publishes) as the bytes of the held update of its app and kind, if it is that one."""
        key = (update.app_id, update.kind)
        held = self.cache.held(*key)
        if held is None or (held is not update and held != update):
            return
        with self._bodies_lock:
            old = self._body_of.get(key)
            if old is not None:
                self._held_bodies.pop(old, None)
            self._body_of[key] = body
            self._held_bodies[body] = key

    def held_body(self, app_id: str, kind: TokenKind) -> tuple[TokenUpdate, bytes] | None:
        """The held update of `app_id` and `kind` with the exact signed bytes it came in
        (None when nothing is held, or it came without bytes: a test's direct offer)."""
        with self._offer_lock:
            held = self.cache.held(app_id, kind)
            body = self._body_of.get((app_id, kind))
        if held is None or body is None:
            return None
        return held, body

    def offer(
        self,
        update: TokenUpdate,
        *,
        origin: str,
        deadline_s: float | None = None,
        cap_s: float | None = None,
        body: bytes | None = None,
    ) -> None:
        """Offer to the cache and hand an accepted update to the callback thread (never run
        here: not on a caller's thread, nor on the subscriber's, which must keep pumping the
        broker connection). `body`, the signed bytes `update` was decoded from, is
        remembered before any callback runs, so a callback finds it with `held_body`."""
        with self._offer_lock:
            outcome = self.cache.offer(update, deadline_s=deadline_s, cap_s=cap_s)
            if body is not None:
                self.remember_body(update, body)
            if outcome is Offer.ACCEPTED:
                self.callbacks.submit(update)
        if outcome is Offer.STALE:
            self._counters.count("stale")
            held = self.cache.held(update.app_id, update.kind)
            if held is not None and held.version > update.version:
                # Re-publishes of the held version are routine; an older one is not.
                log.warning(
                    "dropped %s from %s: older than the held v%d", update, origin, held.version
                )
            return
        if outcome is Offer.EXPIRED:
            self._counters.count("expired")
            # A snapshot may simply be read at the end of its life; a message should not be.
            log.log(
                logging.WARNING if origin == "broker" else logging.DEBUG,
                "dropped expired %s from %s",
                update,
                origin,
            )
            return
        self._counters.count("accepted")
        log.debug("accepted %s from %s", update, origin)


def _deadline(received_s: float, ttl_ms: int | None) -> float | None:
    """The local expiry of a snapshot whose key had `ttl_ms` left when the reply came."""
    return None if ttl_ms is None else received_s + ttl_ms / 1000.0


def snapshot_deadline(
    update: TokenUpdate, received_s: float, ttl_ms: int | None, offset_s: float
) -> float | None:
    """The local expiry of a snapshot read at `received_s` with `ttl_ms` left in Redis:
    never more than the token's lifetime from the read. None (use `expires_at` + offset)
    when Redis gave no TTL, or one a day or more away from what `expires_at` says: that is
    no clock skew but a key whose TTL was not set from the update (a writer of its own)."""
    deadline = _deadline(received_s, ttl_ms)
    if deadline is None:
        return None
    if abs(deadline - (update.expires_at + offset_s)) >= ABSURD_S:
        return None
    return min(deadline, received_s + max(0.0, update.expires_at - update.issued_at))
