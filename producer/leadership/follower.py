"""Following Redis for every credential at once: one pipelined batch of MGETs per tick.

A producer keeps thousands of credentials. Reading each one's snapshot with its own GET
at every step cost one round trip per app per step; instead, once per tick the follower
reads them all (MGETs of `chunk` keys, sent in one pipeline) and hands each refresher
what Redis holds (`AppRefresher.observe`): a standby adopts newer tokens, so it holds the
current ones when it takes over; the leader adopts overrides and writes back a token Redis
lost or holds older.

Verifying a signature costs tens of microseconds, so the follower keeps the raw bytes it
last verified per credential and decodes only what changed since (with a
`RememberingCodec`, also not the bytes this producer wrote itself): a quiet tick of 10,000
apps is one MGET batch and 10,000 byte comparisons. A refresher already holding the stored
version is not called at all.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import redis

from consumer_lib.errors import InvalidUpdate
from consumer_lib.redis_errors import translated
from consumer_lib.wire.keys import KeyLayout
from consumer_lib.wire.signing import PLAIN, UpdateCodec
from consumer_lib.wire.update import TokenUpdate
from producer.refresh.refresher import AppRefresher
from producer.store.remembering_codec import RememberingCodec

log = logging.getLogger(__name__)

#: Keys per MGET: big enough to amortise round trips, small enough not to block Redis.
CHUNK_KEYS = 500


def _no_bytes(update: TokenUpdate) -> bytes | None:
    return None


@dataclass
class TickStats:
    """What one tick found."""

    read: int = 0
    decoded: int = 0
    invalid: int = 0
    observed: int = 0
    skipped_busy: int = 0
    changed_meanwhile: int = 0


class SnapshotFollower:
    """Reads every credential's snapshot per `tick()`; not thread-safe (one caller)."""

    def __init__(
        self,
        client: redis.Redis,
        keys: KeyLayout | None = None,
        codec: UpdateCodec = PLAIN,
        *,
        chunk_keys: int = CHUNK_KEYS,
    ) -> None:
        self._client = client
        self._keys = keys or KeyLayout()
        self._codec = codec
        self._chunk_keys = chunk_keys
        remembering = codec if isinstance(codec, RememberingCodec) else None
        self._bytes_of = remembering.bytes_of if remembering else _no_bytes
        #: Per Redis key: the raw bytes last decoded, and what they decoded to.
        self._verified: dict[str, tuple[bytes, TokenUpdate | InvalidUpdate]] = {}
        self.ticks = 0

    def tick(self, refreshers: Sequence[AppRefresher]) -> TickStats:
        """One batched read, fed to the refreshers; `StoreError` when Redis is away."""
        names = [self._keys.token(r.app.app_id, r.kind) for r in refreshers]
        # What each held before the read: one that changed since (a step fetched and wrote
        # it meanwhile) is not judged by this read, older than its own write.
        helds = [r.held for r in refreshers]
        raws = self._read(names)
        stats = TickStats(read=len(names))
        # Updated in place: a quiet tick allocates nothing that outlives it.
        verified = self._verified
        for refresher, name, raw, held in zip(refreshers, names, raws, helds, strict=True):
            if raw is None:
                verified.pop(name, None)
                if held is not None and self._observe(refresher, held, None, stats):
                    stats.observed += 1
                continue
            known = verified.get(name)
            if known is not None and known[0] == raw:
                stored = known[1]
            else:
                mine = None if held is None else self._bytes_of(held)
                if held is not None and mine is not None and mine == raw:
                    stored = held  # what this producer wrote or already verified
                    raw = mine  # kept once, not twice (the codec remembers these bytes)
                else:
                    stored = self._decode(raw)
                    stats.decoded += 1
                verified[name] = (raw, stored)
            if isinstance(stored, InvalidUpdate):
                stats.invalid += 1
            elif held is not None and held.version == stored.version:
                continue  # the usual case: nothing new
            if self._observe(refresher, held, stored, stats):
                stats.observed += 1
        if len(verified) > len(names):
            # Only what is still served is remembered (a reload dropped some).
            served = set(names)
            self._verified = {k: v for k, v in verified.items() if k in served}
        self.ticks += 1
        return stats

    def forget(self) -> None:
        """Drop the verified bytes (e.g. after the keys changed)."""
        self._verified = {}

    def _observe(
        self,
        refresher: AppRefresher,
        held_when_read: TokenUpdate | None,
        stored: TokenUpdate | InvalidUpdate | None,
        stats: TickStats,
    ) -> bool:
        if refresher.held is not held_when_read:
            # A step replaced it during the read (a fill: thousands at once): what was
            # read is older than its write; the next tick looks again. Without this, each
            # such credential was "lost by Redis" and written back, warning, once more.
            stats.changed_meanwhile += 1
            return False
        if refresher.observe(stored):
            return True
        stats.skipped_busy += 1
        return False

    def _decode(self, raw: bytes) -> TokenUpdate | InvalidUpdate:
        try:
            return self._codec.decode(raw)
        except InvalidUpdate as exc:
            return exc

    def _read(self, names: list[str]) -> list[bytes | None]:
        if not names:
            return []
        with translated("reading snapshots", self._client):
            pipe = self._client.pipeline(transaction=False)
            for start in range(0, len(names), self._chunk_keys):
                pipe.mget(names[start : start + self._chunk_keys])
            replies = pipe.execute()
        raws: list[bytes | None] = []
        for reply in replies:
            raws.extend(reply)
        return raws
