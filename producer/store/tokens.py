"""Writing token updates to Redis: version allocation and a compare-and-set, both in Lua.

A write only lands when its version is higher than the stored one, so a slow or stale
writer (an old producer, an override racing a refresh) can never replace a newer token.
Versions come from `next_version()`: above every version ever handed out for the app and
kind, and never below the caller's clock in milliseconds, so they keep rising even if
Redis loses its data.

A new version costs two round trips: `read_with_version()` (or `next_version()`) takes the
version with the snapshot, and `write()` stores the update and, given an `AuditRecord`,
adds its audit entry in the same call, only when the write lands.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis

from consumer_lib.errors import InvalidUpdate, StoreError
from consumer_lib.redis_errors import describe_redis_error, translated
from consumer_lib.snapshot import SnapshotReader
from consumer_lib.wire.keys import KeyLayout
from consumer_lib.wire.signing import PLAIN, UpdateCodec
from consumer_lib.wire.update import TokenKind, TokenUpdate
from producer.store.audit import AuditRecord
from producer.store.functions import FunctionLibrary
from producer.store.replicas import ReplicaWait

log = logging.getLogger(__name__)

#: Versions follow the writers' clocks in ms: one more than this ahead of the caller's clock
#: is poisoned (a stray writer, a bug), never real, and is replaced rather than obeyed.
VERSION_AHEAD_MAX_MS = 30 * 86_400_000
#: The highest version: exact in Lua and in JSON doubles.
MAX_VERSION = 2**53 - 1

_KEY_ID = re.compile(r"[0-9a-f]{16}")


class VersionPoisoned(StoreError):
    """No valid version can be handed out (the counter is out of range and cannot be
    repaired): raised before any upstream call, never after."""


@dataclass(frozen=True)
class WriteResult:
    """Whether the write landed; if not, the newer update that Redis holds instead."""

    written: bool
    stored: TokenUpdate | None = None
    #: Refused because the writer's fence owner no longer holds the leader lease.
    fenced: bool = False
    #: This very update was already stored: a replay of our own write (a retry after a
    #: lost reply), so it counts as written.
    replayed: bool = False
    #: False when Redis has replicas and none confirmed the write in time (`WAIT`): a
    #: failover could lose it, so write it again later.
    confirmed: bool = True
    #: Written with an `AuditRecord` whose entry Redis refused (the write stands): why.
    audit_error: str | None = None


class TokenStore:
    """The writing side of the Redis snapshot (the reading side is `SnapshotReader`)."""

    def __init__(
        self,
        client: redis.Redis,
        keys: KeyLayout | None = None,
        codec: UpdateCodec = PLAIN,
        *,
        replicas: int | None = None,
        replica_wait_ms: int = 250,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`replicas`: how many replicas must confirm a write (`ReplicaWait`; by default 1
        behind Sentinel, else 0). `clock` is the writer's, the one `expires_at` is on: the
        key expires after `expires_at - clock()` (PX), so Redis's clock never matters."""
        self._client = client
        self._clock = clock
        self._keys = keys or KeyLayout()
        self._codec = codec
        self._reader = SnapshotReader(client, self._keys, codec)
        self._replicas = ReplicaWait(client, replicas=replicas, timeout_ms=replica_wait_ms)
        functions = FunctionLibrary(client)
        self._next_version = functions.function("store_next_version")
        self._compare_and_set = functions.function("store_compare_and_set")
        self._delete_if_equal = functions.function("store_delete_if_equal")

    @staticmethod
    def _ceiling_ms(now_ms: int) -> int:
        """The highest version a writer whose clock reads `now_ms` takes for real."""
        return min(MAX_VERSION, now_ms + VERSION_AHEAD_MAX_MS)

    @property
    def reader(self) -> SnapshotReader:
        return self._reader

    @property
    def client(self) -> redis.Redis:
        """The Redis client it writes through (for `TIME`: `clock_skew.check_issuer_clock`)."""
        return self._client

    def read(self, app_id: str, kind: TokenKind = TokenKind.ACCESS_TOKEN) -> TokenUpdate | None:
        """The stored update (see `SnapshotReader.read`)."""
        return self._reader.read(app_id, kind)

    def announce_verify_keys(self, key_ids: list[str]) -> None:
        """Tell operators which key ids the producers accept (`wxtoken set` checks its own
        against them). The leader calls this when it starts leading."""
        ids = sorted({k for k in key_ids if _KEY_ID.fullmatch(k)})
        with translated("announcing verify keys", self._client):
            self._client.set(self._keys.verify_keys, ",".join(ids))

    def announced_verify_keys(self) -> set[str] | None:
        """The key ids the producers announced; None when none did. Garbage is ignored."""
        with translated("reading verify keys", self._client):
            raw = self._client.get(self._keys.verify_keys)
        if raw is None:
            return None
        text = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
        return {k for k in text.split(",") if _KEY_ID.fullmatch(k)}

    def discard_invalid(self, app_id: str, kind: TokenKind = TokenKind.ACCESS_TOKEN) -> bool:
        """Delete the stored value if it does not decode (unsigned, forged, garbage).

        The compare-and-set reads versions without checking signatures, so a forged value
        with a huge version would otherwise block every genuine write. Only that exact
        value is deleted, never one written meanwhile. True when something was deleted.
        """
        key = self._keys.token(app_id, kind)
        with translated(f"discarding {app_id}/{kind}", self._client):
            raw = self._client.get(key)
            if raw is None:
                return False
            try:
                self._codec.decode(raw)
                return False
            except InvalidUpdate:
                pass
            return bool(self._delete_if_equal(keys=[key], args=[raw]))

    def forget(self, app_id: str, kind: TokenKind = TokenKind.ACCESS_TOKEN) -> bool:
        """Delete the stored value of a credential no longer served (a revoked platform
        authorizer): the value read, never one written meanwhile. True when deleted."""
        key = self._keys.token(app_id, kind)
        with translated(f"deleting {app_id}/{kind}", self._client):
            raw = self._client.get(key)
            if raw is None:
                return False
            return bool(self._delete_if_equal(keys=[key], args=[raw]))

    def next_version(self, app_id: str, kind: TokenKind, *, now_s: float) -> int:
        """A version higher than any handed out or stored for this app and kind, checked
        before any upstream call: always in 1..2^53-1 and at most `VERSION_AHEAD_MAX_MS`
        ahead of `now_s`. A version key holding garbage or a poisoned version is repaired
        (overwritten, logged); `VersionPoisoned` when no valid version is left."""
        return self._allocate(app_id, kind, now_s=now_s)[0]

    def read_with_version(
        self, app_id: str, kind: TokenKind, *, now_s: float
    ) -> tuple[TokenUpdate | InvalidUpdate | None, int]:
        """The stored update (as `read`, an `InvalidUpdate` returned rather than raised) and
        a fresh version (as `next_version`), in one round trip: what a refresh about to
        fetch needs. `VersionPoisoned` (the snapshot unread) when no valid version is left."""
        version, raw = self._allocate(app_id, kind, now_s=now_s)
        if raw is None:
            return None, version
        if isinstance(raw, Exception):  # the token key is of another type: as `read` raises
            raise StoreError(f"reading {app_id}/{kind}: {describe_redis_error(raw)}")
        if not isinstance(raw, bytes | str):
            raise StoreError(f"reading {app_id}/{kind}: unexpected answer {raw!r:.100}")
        try:
            return self._codec.decode(raw), version
        except InvalidUpdate as exc:
            return exc, version

    def _allocate(self, app_id: str, kind: TokenKind, *, now_s: float) -> tuple[int, object]:
        """A fresh version and what the token key held (bytes, None, or the error GET met)."""
        key = self._keys.version(app_id, kind)
        floor_ms = math.floor(now_s * 1000)
        with translated(f"allocating a version of {app_id}/{kind}", self._client):
            try:
                reply = self._next_version(
                    keys=[key, self._keys.token(app_id, kind)],
                    args=[floor_ms, self._ceiling_ms(floor_ms)],
                )
            except redis.ResponseError as exc:
                if "no valid version left" in str(exc):
                    raise VersionPoisoned(f"{app_id}/{kind}: {describe_redis_error(exc)}") from None
                raise
        try:
            version = int(reply[0])
            repaired = int(reply[1]) == 1
            stored = reply[3]
        except (TypeError, ValueError, IndexError):
            raise VersionPoisoned(f"{app_id}/{kind}: unexpected answer {reply!r:.100}") from None
        if not 0 < version <= MAX_VERSION:
            raise VersionPoisoned(f"{app_id}/{kind}: version {version} out of range")
        if repaired:
            raw = reply[2]
            shown = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
            log.warning(
                "%s: version key %s held %s, not a version (garbage, 2^53 or more, or more "
                "than %d days ahead of the clock): repaired to %d",
                app_id,
                key,
                ascii(shown[:64]),
                VERSION_AHEAD_MAX_MS // 86_400_000,
                version,
            )
        return version, stored

    def write(
        self,
        update: TokenUpdate,
        *,
        fence_owner: str | None = None,
        audit: AuditRecord | None = None,
    ) -> WriteResult:
        """Store `update` unless Redis already holds the same or a newer version, or
        (with `fence_owner`) unless that owner no longer holds the leader lease. With
        `audit`, its entry is added in the same call when (and only when) the write lands.

        Idempotent: a replay of the same update (redis-py retries a script whose reply was
        lost) finds its own write and reports it written (`replayed`), adding no entry."""
        expires_in_ms = math.floor((update.expires_at - self._clock()) * 1000)
        keys = [
            self._keys.token(update.app_id, update.kind),
            self._keys.version(update.app_id, update.kind),
            self._keys.known,
        ]
        audit_args: list[str | int] = []
        if audit is not None:
            keys.append(audit.key)
            audit_args = [max(1, audit.max_entries)]
            for name, value in audit.fields.items():
                audit_args += [name, value]
        if fence_owner:
            # Only a fenced write names the lease: the ops user may not even read it in a script.
            keys.append(self._keys.leader)
        with translated(f"writing {update.app_id}/{update.kind}", self._client):
            reply, confirmed = self._replicas.run(
                self._compare_and_set,
                keys=keys,
                args=[
                    self._codec.encode(update),
                    update.version,
                    max(0, expires_in_ms),
                    KeyLayout.member(update.app_id, update.kind),
                    fence_owner or "",
                    # The writer's clock is the update's issue time (its version at least).
                    self._ceiling_ms(max(update.version, math.floor(update.issued_at * 1000))),
                    *audit_args,
                ],
            )
        status = int(reply[0])
        if status in (1, 3):
            audit_error = _text(reply[1]) if status == 1 and len(reply) > 1 else None
            return WriteResult(
                written=True, replayed=status == 3, confirmed=confirmed, audit_error=audit_error
            )
        if status == 2:
            return WriteResult(written=False, fenced=True)
        try:
            stored = self._codec.decode(reply[1])
        except InvalidUpdate:
            # Refused by a higher version that no longer validates: nothing to adopt.
            stored = None
        return WriteResult(written=False, stored=stored)


def _text(value: object) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
