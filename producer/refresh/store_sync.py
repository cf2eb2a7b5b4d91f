"""A credential's side of the Redis snapshot: adopting, writing back, fencing, versions.

`StoreSync` talks to Redis (through `TokenStore`) for every credential of a producer; each
call is handed the `CredentialState` it acts on:
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

from consumer_lib.errors import InvalidUpdate, StoreError
from consumer_lib.wire.update import TokenSource, TokenUpdate
from producer.leadership.clock_skew import ISSUE_MAX_SKEW_S
from producer.ports import Gate
from producer.refresh.state import CredentialState
from producer.store.issuing import Issuer
from producer.store.tokens import TokenStore, VersionPoisoned

log = logging.getLogger(__name__)


class StoreSync:
    """Redis handling of every credential of one producer."""

    __slots__ = ("_clock", "_gate", "_issuer", "_store")

    def __init__(
        self, store: TokenStore, issuer: Issuer, *, gate: Gate, clock: Callable[[], float]
    ) -> None:
        self._store = store
        self._issuer = issuer
        self._gate = gate
        self._clock = clock

    def sync(self, cred: CredentialState, *, leading: bool, about_to_fetch: bool = False) -> None:
        """Read `cred`'s snapshot and act on it (see `apply`). A leader `about_to_fetch`
        takes the fetch's fencing version in the same round trip."""
        app_id = cred.app.app_id
        now_s = self._clock()
        if not cred.store_reachable and (
            now_s - cred.store_probed_at < cred.timing.store_retry_s
            or (leading and cred.refresh_due(now_s))
        ):
            # Redis is away: look again every store_retry_s, and only after a due refresh
            # is published (each look may wait out a Redis timeout).
            return
        cred.store_probed_at = now_s
        try:
            if cred.unsaved is not None and leading:
                self.write(cred, cred.unsaved)
            stored = self._read(cred, now_s, with_version=leading and about_to_fetch)
            if not cred.store_reachable:
                log.info("%s: Redis reachable again", app_id)
                cred.store_reachable = True
            self.apply(cred, stored, leading=leading)
        except StoreError as exc:
            self.unreachable(cred, exc)

    def observed(
        self, cred: CredentialState, stored: TokenUpdate | InvalidUpdate | None, *, leading: bool
    ) -> None:
        """What a batched read (the follower's) found in Redis for `cred`."""
        cred.store_probed_at = self._clock()
        if not cred.store_reachable:
            log.info("%s: Redis reachable again", cred.app.app_id)
            cred.store_reachable = True
        try:
            if cred.unsaved is not None and leading:
                self.write(cred, cred.unsaved)
            self.apply(cred, stored, leading=leading)
        except StoreError as exc:
            self.unreachable(cred, exc)

    def _read(
        self, cred: CredentialState, now_s: float, *, with_version: bool
    ) -> TokenUpdate | InvalidUpdate | None:
        """The snapshot; `with_version`, also a fencing version for this step's fetch (a
        poisoned version counter leaves it to `allocate_version`, which says so)."""
        if with_version:
            try:
                stored, cred.taken_version = self._store.read_with_version(
                    cred.app.app_id, cred.kind, now_s=now_s
                )
                return stored
            except VersionPoisoned:
                pass
        try:
            return self._store.read(cred.app.app_id, cred.kind)
        except InvalidUpdate as exc:
            return exc

    def apply(
        self, cred: CredentialState, stored: TokenUpdate | InvalidUpdate | None, *, leading: bool
    ) -> None:
        """Adopt a newer valid snapshot; as leader, delete an invalid one and write the
        held token back over a missing or older one. `StoreError` propagates."""
        app_id = cred.app.app_id
        now_s = self._clock()
        if isinstance(stored, InvalidUpdate):
            if not leading:
                log.warning("%s: snapshot in Redis is invalid (%s)", app_id, stored)
            elif self._store.discard_invalid(app_id, cred.kind):
                log.warning("%s: deleted an invalid snapshot from Redis (%s)", app_id, stored)
            stored = None
        held = cred.held
        if stored is not None and stored.is_valid_at(now_s):
            if held is None or stored.version > held.version:
                self.adopt(cred, stored)
                return
            if stored.version == held.version:
                return
        if leading and held is not None and held.is_valid_at(now_s):
            # Redis lost the snapshot (flushed, failed over) or holds an older one than ours:
            # late subscribers need ours.
            what = "no snapshot" if stored is None else f"an older v{stored.version}"
            log.warning("%s: Redis has %s; writing back %s", app_id, what, held)
            self.write(cred, held)

    def adopt(self, cred: CredentialState, update: TokenUpdate) -> None:
        log.info("%s: adopting %s from Redis", cred.app.app_id, update)
        cred.hold(self._clamped(update))
        cred.last_version = max(cred.last_version, update.version)
        cred.stats.adopted += 1
        cred.retry_at = 0.0

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
            update.app_id,
            update.version,
            ahead_s,
            lifetime_s,
        )
        return update.model_copy(update={"issued_at": now_s, "expires_at": now_s + lifetime_s})

    def unreachable(self, cred: CredentialState, exc: StoreError) -> None:
        cred.stats.store_failures += 1
        if cred.store_reachable:
            log.warning("%s: Redis unreachable (%s); carrying on from memory", cred.app.app_id, exc)
        cred.store_reachable = False

    def write(self, cred: CredentialState, update: TokenUpdate) -> bool:
        """Compare-and-set into Redis; False when Redis holds a newer one (then adopted) or
        when another producer holds the lease (then this one steps down)."""
        # StoreError propagates to the caller (the unsaved one keeps its audit entry).
        result = self._issuer.write_unsaved(
            update,
            audit_entry=cred.unsaved_audit if update is cred.unsaved else None,
            fence_owner=self._gate.fence_owner,
        )
        cred.unsaved, cred.unsaved_audit = None, None
        if result.written:  # a replay of our own lost-reply write counts (`replayed`)
            if not result.confirmed:
                # No replica confirmed it: a failover could lose it, so write it again.
                cred.unsaved = update
            return True
        if result.fenced:
            self.fenced_off(cred, update)
            return False
        if result.stored is not None and result.stored.version == update.version:
            return True  # already there (a batched read raced our own write)
        self.refused(cred, update, result.stored)
        return False

    def fenced_off(self, cred: CredentialState, update: TokenUpdate) -> None:
        cred.stats.writes_fenced += 1
        log.warning(
            "%s: v%d fenced off: another producer holds the lease; standing by",
            update.app_id,
            update.version,
        )
        self._gate.fenced()

    def refused(
        self, cred: CredentialState, update: TokenUpdate, stored: TokenUpdate | None
    ) -> None:
        cred.stats.writes_refused += 1
        log.warning(
            "%s: Redis holds a newer version than v%d; keeping that one",
            update.app_id,
            update.version,
        )
        if stored is not None and stored.is_valid_at(self._clock()):
            self.adopt(cred, stored)

    def allocate_version(self, cred: CredentialState, now_s: float) -> int | None:
        """The fencing version of `cred`'s next fetch; None when Redis says the version
        counter is poisoned beyond repair (`VersionPoisoned`): then nothing may be fetched,
        since a clock version would sit below the poisoned one and every write would be
        refused."""
        version = math.floor(now_s * 1000)
        taken, cred.taken_version = cred.taken_version, None
        if taken is not None:  # taken with this step's snapshot
            version = taken
        elif cred.store_reachable:  # with Redis away, don't wait out its timeout here too
            try:
                version = self._issuer.new_version(cred.app.app_id, cred.kind, now_s=now_s)
            except VersionPoisoned as exc:
                cred.stats.store_failures += 1
                log.error("%s: no fetch: %s", cred.app.app_id, exc)
                return None
            except StoreError as exc:
                self.unreachable(cred, exc)
        version = max(version, cred.last_version + 1)
        cred.last_version = version
        return version
