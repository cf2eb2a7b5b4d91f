"""Writing token updates to Redis: version allocation and a compare-and-set, both in Lua.

A write only lands when its version is higher than the stored one, so a slow or stale
writer (an old producer, an override racing a refresh) can never replace a newer token.
Versions come from `next_version()`: above every version ever handed out for the app and
kind, and never below the caller's clock in milliseconds, so they keep rising even if
Redis loses its data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import redis

from consumer_lib.errors import InvalidUpdate, StoreError
from consumer_lib.snapshot import REDIS_ERRORS, SnapshotReader, describe_redis_error
from consumer_lib.wire.keys import KeyLayout
from consumer_lib.wire.signing import PLAIN, UpdateCodec
from consumer_lib.wire.update import TokenKind, TokenUpdate

_STORED_VERSION = """
local function stored_version(key)
  local raw = redis.call('GET', key)
  if not raw then return 0 end
  local ok, doc = pcall(cjson.decode, raw)
  if not ok or type(doc) ~= 'table' then return 0 end
  if type(doc['payload']) == 'string' then  -- a signed envelope: the update is inside
    ok, doc = pcall(cjson.decode, doc['payload'])
    if not ok or type(doc) ~= 'table' then return 0 end
  end
  if type(doc['version']) == 'number' then return doc['version'] end
  return 0
end
"""

# KEYS: version key, token key. ARGV: floor (the caller's clock in ms).
_NEXT_VERSION = (
    _STORED_VERSION
    + """
local last = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
last = math.max(last, stored_version(KEYS[2]))
local v = math.max(last + 1, tonumber(ARGV[1]))
local text = string.format('%.0f', v)
redis.call('SET', KEYS[1], text)
return text
"""
)

# KEYS: token key, version key, known set, lease.
# ARGV: json, version, expiry (ms), member, fence owner ('' for none).
# Returns {1} when written, {0, stored json} when a version at least as high is stored,
# {2} when fenced off: the writer named an owner that does not hold the lease.
_COMPARE_AND_SET = (
    _STORED_VERSION
    + """
if ARGV[5] ~= '' then
  local lease = redis.call('GET', KEYS[4])
  if not lease then return {2} end
  local sep = string.find(lease, '|', 1, true)
  if not sep or string.sub(lease, sep + 1) ~= ARGV[5] then return {2} end
end
local v = tonumber(ARGV[2])
if stored_version(KEYS[1]) >= v then
  return {0, redis.call('GET', KEYS[1])}
end
redis.call('SET', KEYS[1], ARGV[1], 'PXAT', ARGV[3])
redis.call('SADD', KEYS[3], ARGV[4])
local last = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
if v > last then redis.call('SET', KEYS[2], ARGV[2]) end
return {1}
"""
)


# KEYS: token key. ARGV: the exact value to delete. Deletes only if unchanged meanwhile.
_DELETE_IF_EQUAL = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True)
class WriteResult:
    """Whether the write landed; if not, the newer update that Redis holds instead."""

    written: bool
    stored: TokenUpdate | None = None
    #: Refused because the writer's fence owner no longer holds the leader lease.
    fenced: bool = False


class TokenStore:
    """The writing side of the Redis snapshot (the reading side is `SnapshotReader`)."""

    def __init__(
        self, client: redis.Redis, keys: KeyLayout | None = None, codec: UpdateCodec = PLAIN
    ) -> None:
        self._client = client
        self._keys = keys or KeyLayout()
        self._codec = codec
        self._reader = SnapshotReader(client, self._keys, codec)
        self._next_version = client.register_script(_NEXT_VERSION)
        self._compare_and_set = client.register_script(_COMPARE_AND_SET)
        self._delete_if_equal = client.register_script(_DELETE_IF_EQUAL)

    @property
    def reader(self) -> SnapshotReader:
        return self._reader

    def read(self, app_id: str, kind: TokenKind = TokenKind.ACCESS_TOKEN) -> TokenUpdate | None:
        """The stored update (see `SnapshotReader.read`)."""
        return self._reader.read(app_id, kind)

    def discard_invalid(self, app_id: str, kind: TokenKind = TokenKind.ACCESS_TOKEN) -> bool:
        """Delete the stored value if it does not decode (unsigned, forged, garbage).

        The compare-and-set reads versions without checking signatures, so a forged value
        with a huge version would otherwise block every genuine write. Only that exact
        value is deleted, never one written meanwhile. True when something was deleted.
        """
        key = self._keys.token(app_id, kind)
        try:
            raw = self._client.get(key)
            if raw is None:
                return False
            try:
                self._codec.decode(raw)
                return False
            except InvalidUpdate:
                pass
            return bool(self._delete_if_equal(keys=[key], args=[raw]))
        except REDIS_ERRORS as exc:
            raise StoreError(f"discarding {app_id}: {describe_redis_error(exc)}") from None

    def next_version(self, app_id: str, kind: TokenKind, *, now_s: float) -> int:
        """A version higher than any handed out or stored for this app and kind."""
        try:
            raw = self._next_version(
                keys=[self._keys.version(app_id, kind), self._keys.token(app_id, kind)],
                args=[math.floor(now_s * 1000)],
            )
        except REDIS_ERRORS as exc:
            raise StoreError(f"allocating a version: {describe_redis_error(exc)}") from None
        return int(raw)

    def write(self, update: TokenUpdate, *, fence_owner: str | None = None) -> WriteResult:
        """Store `update` unless Redis already holds the same or a newer version, or
        (with `fence_owner`) unless that owner no longer holds the leader lease."""
        expires_at_ms = math.floor(update.expires_at * 1000)
        try:
            reply = self._compare_and_set(
                keys=[
                    self._keys.token(update.app_id, update.kind),
                    self._keys.version(update.app_id, update.kind),
                    self._keys.known,
                    self._keys.leader,
                ],
                args=[
                    self._codec.encode(update),
                    update.version,
                    expires_at_ms,
                    KeyLayout.member(update.app_id, update.kind),
                    fence_owner or "",
                ],
            )
        except REDIS_ERRORS as exc:
            raise StoreError(f"writing {update.app_id}: {describe_redis_error(exc)}") from None
        if int(reply[0]) == 1:
            return WriteResult(written=True)
        if int(reply[0]) == 2:
            return WriteResult(written=False, fenced=True)
        try:
            stored = self._codec.decode(reply[1])
        except InvalidUpdate:
            # Refused by a higher version that no longer validates: nothing to adopt.
            stored = None
        return WriteResult(written=False, stored=stored)
