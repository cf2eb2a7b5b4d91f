"""A refresher's side of the Redis snapshot: adopting, writing back, fencing, versions.

`StoreSync` is the part of `AppRefresher` that talks to Redis (through `TokenStore`):
- a newer valid stored update is adopted (an override issued ahead of this clock is held
  from now for its lifetime); as leader, a snapshot that is missing or older
  than the held token is written back, and one that does not verify is deleted;
- a write refused for a newer stored version adopts that one; a write fenced off (another
  producer holds the lease) steps this producer down;
- with Redis away it carries on from memory, looks again every `store_retry_s`, and
  writes what it could not store once Redis is back.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import TYPE_CHECKING

from consumer_lib.errors import InvalidUpdate, StoreError
from consumer_lib.wire.update import TokenKind, TokenSource, TokenUpdate
from producer.apps import AppConfig
from producer.leadership.clock_skew import ISSUE_MAX_SKEW_S
from producer.ports import Gate
from producer.refresh.reports import RECENT_TOKENS, fingerprint_digest
from producer.refresh.stats import RefresherStats
from producer.refresh.timing import RefreshTiming
from producer.store.issuing import Issuer
from producer.store.tokens import TokenStore, VersionPoisoned

log = logging.getLogger(__name__)


class StoreSync:
    """Redis handling of one credential; mixed into `AppRefresher`, which sets the state
    (and declares its slots)."""

    if not TYPE_CHECKING:  # the state is in `AppRefresher`'s slots (mypy checks those)
        __slots__ = ()
    kind: TokenKind
    app: AppConfig
    stats: RefresherStats
    _clock: Callable[[], float]
    _timing: RefreshTiming
    _store: TokenStore
    _issuer: Issuer
    _gate: Gate
    _held: TokenUpdate | None
    #: SHA-256 digests of the last `RECENT_TOKENS` tokens held, the current one first.
    _recent: tuple[bytes, ...]
    _unsaved: TokenUpdate | None
    _last_version: int
    #: A fencing version taken with the snapshot by this step (`_sync_with_store`), for
    #: its fetch: cleared when the step ends.
    _taken_version: int | None
    _retry_at: float
    _store_reachable: bool
    _store_probed_at: float

    def _refresh_due(self, now_s: float) -> bool:
        raise NotImplementedError

    def _sync_with_store(self, *, leading: bool, about_to_fetch: bool = False) -> None:
        """Read this credential's snapshot and act on it (see `_apply_stored`). A leader
        `about_to_fetch` takes the fetch's fencing version in the same round trip."""
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
            stored = self._read_stored(now_s, with_version=leading and about_to_fetch)
            if not self._store_reachable:
                log.info("%s: Redis reachable again", app_id)
                self._store_reachable = True
            self._apply_stored(stored, leading=leading)
        except StoreError as exc:
            self._store_unreachable(exc)

    def _read_stored(
        self, now_s: float, *, with_version: bool
    ) -> TokenUpdate | InvalidUpdate | None:
        """The snapshot; `with_version`, also a fencing version for this step's fetch (a
        poisoned version counter leaves it to `_allocate_version`, which says so)."""
        if with_version:
            try:
                stored, self._taken_version = self._store.read_with_version(
                    self.app.app_id, self.kind, now_s=now_s
                )
                return stored
            except VersionPoisoned:
                pass
        try:
            return self._store.read(self.app.app_id, self.kind)
        except InvalidUpdate as exc:
            return exc

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

    def _hold(self, update: TokenUpdate) -> None:
        """Make `update` the held token, remembering the fingerprints of the last
        `RECENT_TOKENS` held (what reports may be about: `RequestHandling.knows_token`)."""
        self._held = update
        digest = fingerprint_digest(update.value)
        if digest not in self._recent:
            self._recent = (digest, *self._recent)[:RECENT_TOKENS]

    def _adopt(self, update: TokenUpdate) -> None:
        log.info("%s: adopting %s from Redis", self.app.app_id, update)
        self._hold(self._clamped(update))
        self._last_version = max(self._last_version, update.version)
        self.stats.adopted += 1
        self._retry_at = 0.0

    def _clamped(self, update: TokenUpdate) -> TokenUpdate:
        """An override issued ahead of this clock, moved to start now with its lifetime:
        stamped by an operator's clock 8 h fast, a 10-minute override would otherwise be
        held (and no token fetched) for 8 h 10 min."""
        now_s = self._clock()
        ahead_s = update.issued_at - now_s
        if update.source is not TokenSource.OVERRIDE or ahead_s <= 0:
            return update
        lifetime_s = update.expires_at - update.issued_at
        log.log(
            logging.WARNING if ahead_s > ISSUE_MAX_SKEW_S else logging.DEBUG,
            "%s: override v%d was issued %.1f s ahead of this clock; holding it for its "
            "%.0f s from now",
            self.app.app_id,
            update.version,
            ahead_s,
            lifetime_s,
        )
        return update.model_copy(update={"issued_at": now_s, "expires_at": now_s + lifetime_s})

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
        if result.written:  # a replay of our own lost-reply write counts (`replayed`)
            if not result.confirmed:
                # No replica confirmed it: a failover could lose it, so write it again.
                self._unsaved = update
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

    def _allocate_version(self, now_s: float) -> int | None:
        """The fencing version of the next fetch; None when Redis says the version counter
        is poisoned beyond repair (`VersionPoisoned`): then nothing may be fetched, since a
        clock version would sit below the poisoned one and every write would be refused."""
        version = math.floor(now_s * 1000)
        taken, self._taken_version = self._taken_version, None
        if taken is not None:  # taken with this step's snapshot
            version = taken
        elif self._store_reachable:  # with Redis away, don't wait out its timeout here too
            try:
                version = self._issuer.new_version(self.app.app_id, self.kind, now_s=now_s)
            except VersionPoisoned as exc:
                self.stats.store_failures += 1
                log.error("%s: no fetch: %s", self.app.app_id, exc)
                return None
            except StoreError as exc:
                self._store_unreachable(exc)
        version = max(version, self._last_version + 1)
        self._last_version = version
        return version
