"""`TokenStore` on fakeredis: the Lua compare-and-set, version allocation, and Redis errors."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator

import fakeredis
import pytest

from consumer_lib import InvalidUpdate, StoreError, TokenKind, TokenSource
from consumer_lib.wire.keys import KeyLayout
from producer.store.audit import AuditRecord
from producer.store.tokens import VERSION_AHEAD_MAX_MS, TokenStore, VersionPoisoned
from tests.unit._helpers import T0, make_update, unreachable_redis

KEYS = KeyLayout()


@pytest.fixture
def client() -> Iterator[fakeredis.FakeRedis]:
    fake = fakeredis.FakeRedis()
    yield fake
    fake.close()


@pytest.fixture
def store(client: fakeredis.FakeRedis) -> TokenStore:
    return TokenStore(client)


def test_write_then_read_round_trip(store: TokenStore) -> None:
    """What is written is read back unchanged."""
    update = make_update(version=5, reason="test")
    assert store.write(update).written
    assert store.read("wxapp1") == update
    assert store.reader.read("wxapp1", TokenKind.ACCESS_TOKEN) == update


def test_read_of_unknown_app_is_none(store: TokenStore) -> None:
    """An app never written has no snapshot."""
    assert store.read("wxnever") is None


def test_kinds_are_stored_separately(store: TokenStore) -> None:
    """An access token and a jsapi ticket of the same app do not overwrite each other."""
    token = make_update(version=9, value="ACCESS-TOKEN-VALUE")
    ticket = make_update(version=1, value="JSAPI-TICKET-VALUE", kind=TokenKind.JSAPI_TICKET)
    assert store.write(token).written
    assert store.write(ticket).written
    assert store.read("wxapp1", TokenKind.ACCESS_TOKEN) == token
    assert store.read("wxapp1", TokenKind.JSAPI_TICKET) == ticket


def test_key_prefix_separates_deployments(client: fakeredis.FakeRedis) -> None:
    """Two stores with different prefixes on one Redis do not see each other's tokens."""
    blue = TokenStore(client, KeyLayout("blue"))
    green = TokenStore(client, KeyLayout("green"))
    blue.write(make_update(version=3))
    assert green.read("wxapp1") is None
    assert green.reader.known() == []
    assert green.write(make_update(version=1)).written


def test_expiry_is_relative_to_the_writers_clock(client: fakeredis.FakeRedis) -> None:
    """The token key lives `expires_at - now` on the writer's clock (PX, not PXAT): a
    producer five minutes behind Redis still gives the key its whole remaining life."""
    behind_s = 300.0
    writer_now = time.time() - behind_s
    store = TokenStore(client, clock=lambda: writer_now)
    update = make_update(issued_at=writer_now - 0.123, lifetime_s=7200.123)
    store.write(update)
    key = KEYS.token("wxapp1")
    assert 7_199_000 < client.pttl(key) <= 7_200_000
    # With PXAT the key would have expired 300 s early, at the writer's expires_at.
    assert client.pexpiretime(key) > math.floor(update.expires_at * 1000) + 299_000


def test_version_key_has_no_expiry(store: TokenStore, client: fakeredis.FakeRedis) -> None:
    """The version counter survives the token's expiry (it has no TTL)."""
    store.write(make_update(version=12))
    assert client.get(KEYS.version("wxapp1")) == b"12"
    assert client.ttl(KEYS.version("wxapp1")) == -1


def test_expired_update_leaves_no_snapshot(store: TokenStore) -> None:
    """An update already past its expiry in real time is gone from Redis at once."""
    update = make_update(issued_at=time.time() - 100, lifetime_s=50)
    store.write(update)
    assert store.read("wxapp1") is None


@pytest.mark.parametrize("delta", [0, -1, -99])
def test_older_or_equal_version_is_refused(store: TokenStore, delta: int) -> None:
    """A write whose version is not above the stored one changes nothing and returns the stored."""
    newer = make_update(version=100, value="NEWER-TOKEN-VALUE")
    store.write(newer)
    stale = make_update(version=100 + delta, value="STALE-TOKEN-VALUE", lifetime_s=9000)
    result = store.write(stale)
    assert not result.written
    assert result.stored == newer
    assert store.read("wxapp1") == newer


def test_refused_write_keeps_the_stored_ttl(store: TokenStore, client: fakeredis.FakeRedis) -> None:
    """A refused write leaves the stored token's expiry alone."""
    newer = make_update(version=100, issued_at=time.time(), lifetime_s=3600)
    store.write(newer)
    before = client.pexpiretime(KEYS.token("wxapp1"))
    store.write(make_update(version=50, issued_at=time.time(), lifetime_s=7200))
    assert client.pexpiretime(KEYS.token("wxapp1")) == before


def test_override_with_higher_version_replaces(store: TokenStore) -> None:
    """A higher version replaces the stored one, whatever its source."""
    store.write(make_update(version=10))
    override = make_update(version=11, value="OVERRIDE-VALUE-1", source=TokenSource.OVERRIDE)
    assert store.write(override).written
    assert store.read("wxapp1") == override


def test_next_version_is_above_stored_and_allocated(store: TokenStore) -> None:
    """Each allocated version is above every version written or handed out before."""
    now = T0
    ahead = math.floor(T0 * 1000) + 86_400_000  # a writer whose clock is a day ahead
    store.write(make_update(version=ahead))
    allocated = [store.next_version("wxapp1", TokenKind.ACCESS_TOKEN, now_s=now) for _ in range(5)]
    assert allocated[0] > ahead
    assert allocated == sorted(set(allocated))


def test_next_version_is_at_least_clock_ms(store: TokenStore) -> None:
    """A first version is the caller's clock in milliseconds, so versions survive data loss."""
    version = store.next_version("wxapp1", TokenKind.ACCESS_TOKEN, now_s=T0 + 0.0126)
    assert version == math.floor((T0 + 0.0126) * 1000)


def test_next_version_stays_below_2_53(store: TokenStore) -> None:
    """Clock-based versions are exact integers well within the wire limit."""
    version = store.next_version("wxapp1", TokenKind.ACCESS_TOKEN, now_s=T0)
    make_update(version=version)  # would raise if out of range
    assert version < 2**53


def test_next_version_rises_after_token_expires(
    store: TokenStore, client: fakeredis.FakeRedis
) -> None:
    """After the token key expires, the version key still keeps versions rising."""
    high = T0 * 1000 + 10_000_000
    store.write(make_update(version=int(high)))
    client.delete(KEYS.token("wxapp1"))  # what PXAT does at expiry
    assert store.next_version("wxapp1", TokenKind.ACCESS_TOKEN, now_s=T0) > high


def test_next_version_rises_after_version_key_lost(
    store: TokenStore, client: fakeredis.FakeRedis
) -> None:
    """With the version key deleted, the stored token's version is still respected."""
    high = int(T0 * 1000 + 10_000_000)
    store.write(make_update(version=high))
    client.delete(KEYS.version("wxapp1"))
    assert store.next_version("wxapp1", TokenKind.ACCESS_TOKEN, now_s=T0) == high + 1


def test_next_version_uses_clock_floor_after_flush(
    store: TokenStore, client: fakeredis.FakeRedis
) -> None:
    """With every key gone (FLUSHALL), versions restart from the clock, above earlier ones."""
    first = store.next_version("wxapp1", TokenKind.ACCESS_TOKEN, now_s=T0)
    store.write(make_update(version=first))
    client.flushall()
    later = store.next_version("wxapp1", TokenKind.ACCESS_TOKEN, now_s=T0 + 1)
    assert later > first


def test_next_version_ignores_corrupt_version_key(
    store: TokenStore, client: fakeredis.FakeRedis
) -> None:
    """A version key that is not a number is treated as absent, not as an error."""
    client.set(KEYS.version("wxapp1"), "garbage")
    assert store.next_version("wxapp1", TokenKind.ACCESS_TOKEN, now_s=T0) == math.floor(T0 * 1000)


@pytest.mark.parametrize(
    "corrupt",
    [b"not json", b"[1,2]", b'{"version": "999999999999999"}', b"\xff\xfe", b'{"value": "x"}'],
)
def test_corrupt_value_is_overwritten_by_next_write(
    store: TokenStore, client: fakeredis.FakeRedis, corrupt: bytes
) -> None:
    """A stored value that is not an update is replaced by the next write."""
    client.set(KEYS.token("wxapp1"), corrupt)
    update = make_update(version=store.next_version("wxapp1", TokenKind.ACCESS_TOKEN, now_s=T0))
    assert store.write(update).written
    assert store.read("wxapp1") == update


def test_corrupt_value_reads_as_invalid_update(
    store: TokenStore, client: fakeredis.FakeRedis
) -> None:
    """Reading a corrupt snapshot raises `InvalidUpdate`, not a decoding crash."""
    client.set(KEYS.token("wxapp1"), b"not json")
    with pytest.raises(InvalidUpdate):
        store.read("wxapp1")


def test_refused_write_against_newer_but_invalid_value(
    store: TokenStore, client: fakeredis.FakeRedis
) -> None:
    """A newer stored value that no longer validates refuses the write without raising."""
    client.set(KEYS.token("wxapp1"), b'{"version": 999, "value": ""}')
    result = store.write(make_update(version=10))
    assert not result.written
    assert result.stored is None


def test_known_lists_written_apps(store: TokenStore) -> None:
    """`known()` lists every app and kind written, sorted."""
    store.write(make_update(app_id="wxbbb"))
    store.write(make_update(app_id="wxaaa"))
    store.write(make_update(app_id="wxaaa", kind=TokenKind.JSAPI_TICKET))
    assert store.reader.known() == [
        ("wxaaa", TokenKind.ACCESS_TOKEN),
        ("wxaaa", TokenKind.JSAPI_TICKET),
        ("wxbbb", TokenKind.ACCESS_TOKEN),
    ]


def test_known_skips_malformed_members(store: TokenStore, client: fakeredis.FakeRedis) -> None:
    """A member of the known set that is not app:kind is skipped, not fatal."""
    store.write(make_update(app_id="wxaaa"))
    client.sadd(KEYS.known, "wxzzz:refresh_token", b"\xff")
    assert store.reader.known() == [("wxaaa", TokenKind.ACCESS_TOKEN)]


def test_refused_write_does_not_register_app(store: TokenStore) -> None:
    """A refused write adds nothing to the known set."""
    store.write(make_update(app_id="wxaaa", version=10))
    store.write(make_update(app_id="wxaaa", version=5, kind=TokenKind.ACCESS_TOKEN))
    assert store.reader.known() == [("wxaaa", TokenKind.ACCESS_TOKEN)]


def test_read_many_returns_each_outcome(store: TokenStore, client: fakeredis.FakeRedis) -> None:
    """One read of many apps returns updates, None for missing and the error for corrupt ones."""
    good = make_update(app_id="wxgood")
    store.write(good)
    client.set(KEYS.token("wxbad"), b"{}")
    found = store.reader.read_many(
        [
            ("wxgood", TokenKind.ACCESS_TOKEN),
            ("wxbad", TokenKind.ACCESS_TOKEN),
            ("wxnone", TokenKind.ACCESS_TOKEN),
        ]
    )
    assert found[("wxgood", TokenKind.ACCESS_TOKEN)] == good
    assert isinstance(found[("wxbad", TokenKind.ACCESS_TOKEN)], InvalidUpdate)
    assert found[("wxnone", TokenKind.ACCESS_TOKEN)] is None
    assert store.reader.read_many([]) == {}


# ------------------------------------------------------------------ Redis away
@pytest.fixture
def dead_store() -> Iterator[TokenStore]:
    """A store whose Redis refuses every connection."""
    dead = unreachable_redis()
    yield TokenStore(dead)
    dead.close()


def test_unreachable_read_is_store_error(dead_store: TokenStore) -> None:
    """A read from an unreachable Redis raises `StoreError` naming the app."""
    with pytest.raises(StoreError, match="wxapp1"):
        dead_store.read("wxapp1")


def test_unreachable_write_is_store_error(dead_store: TokenStore) -> None:
    """A write to an unreachable Redis raises `StoreError` without the token."""
    update = make_update(value="SECRET-TOKEN-VALUE-123")
    with pytest.raises(StoreError) as info:
        dead_store.write(update)
    assert "SECRET-TOKEN-VALUE-123" not in str(info.value)
    assert "wxapp1" in str(info.value)


def test_unreachable_next_version_is_store_error(dead_store: TokenStore) -> None:
    """Allocating a version with Redis away raises `StoreError`."""
    with pytest.raises(StoreError, match="version"):
        dead_store.next_version("wxapp1", TokenKind.ACCESS_TOKEN, now_s=T0)


def test_unreachable_known_and_read_many_are_store_errors(dead_store: TokenStore) -> None:
    """Listing and bulk reading with Redis away raise `StoreError`."""
    with pytest.raises(StoreError):
        dead_store.reader.known()
    with pytest.raises(StoreError):
        dead_store.reader.read_many([("wxapp1", TokenKind.ACCESS_TOKEN)])


def test_disconnected_fake_server_is_store_error() -> None:
    """A Redis that drops away after connecting also gives `StoreError`."""
    server = fakeredis.FakeServer()
    client = fakeredis.FakeRedis(server=server)
    store = TokenStore(client)
    store.write(make_update())
    server.connected = False
    with pytest.raises(StoreError):
        store.read("wxapp1")
    server.connected = True
    assert store.read("wxapp1") is not None
    client.close()


def test_store_error_is_one_line(dead_store: TokenStore) -> None:
    """A Redis failure's message is one short line that says what failed."""
    with pytest.raises(StoreError) as info:
        dead_store.write(make_update())
    message = str(info.value)
    assert "\n" not in message
    assert "ConnectionError" in message


# ---- poisoned versions and replays (issue 8, items 4 and 8) ---------------------------------


@pytest.mark.parametrize("poison", [str(2**53), "garbage", str(10**20), "-5", "1.5"])
def test_a_poisoned_version_key_is_repaired_by_the_next_allocation(
    client: fakeredis.FakeRedis, store: TokenStore, poison: str
) -> None:
    """Garbage or an out-of-range version key never reaches an update: the next version is
    the clock's, and the key holds it again."""
    client.set(KeyLayout().version("wxapp1"), poison)
    version = store.next_version("wxapp1", TokenKind.ACCESS_TOKEN, now_s=T0)
    assert version == math.floor(T0 * 1000)
    assert client.get(KeyLayout().version("wxapp1")) == str(version).encode()
    make_update(version=version)  # a valid update: no validation error after a fetch


def test_a_version_key_of_another_type_is_repaired(
    client: fakeredis.FakeRedis, store: TokenStore
) -> None:
    """A hash where the version counter should be is overwritten, not an endless error."""
    client.hset(KeyLayout().version("wxapp1"), "v", "1")
    assert store.next_version("wxapp1", TokenKind.ACCESS_TOKEN, now_s=T0) == math.floor(T0 * 1000)


def test_replaying_the_same_write_counts_as_written(store: TokenStore) -> None:
    """The same update sent twice (a retry after a lost reply) is written both times; a
    different update with the same version is still refused."""
    update = make_update(version=7)
    assert store.write(update).written
    again = store.write(update)
    assert again.written
    assert again.replayed
    other = store.write(make_update(version=7, value="OTHER-TOKEN-bbbbbbbbbbbbbbbb"))
    assert not other.written
    assert other.stored == update


# ---- the snapshot with a version, the audit entry with the write (issue 20) ----------------


def test_read_with_version_answers_the_snapshot_and_a_version_above_it(
    store: TokenStore,
) -> None:
    """One call: what `read` answers, and what `next_version` would hand out next."""
    stored = make_update(version=math.floor(T0 * 1000) + 50)
    assert store.write(stored).written
    found, version = store.read_with_version("wxapp1", TokenKind.ACCESS_TOKEN, now_s=T0)
    assert found == stored
    assert version == stored.version + 1
    assert store.next_version("wxapp1", TokenKind.ACCESS_TOKEN, now_s=T0) == version + 1


def test_read_with_version_of_nothing_stored_is_none_and_the_clock(store: TokenStore) -> None:
    found, version = store.read_with_version("wxnever", TokenKind.ACCESS_TOKEN, now_s=T0)
    assert found is None
    assert version == math.floor(T0 * 1000)


def test_read_with_version_returns_an_invalid_snapshot_and_fails_on_another_type(
    client: fakeredis.FakeRedis, store: TokenStore
) -> None:
    """Garbage reads as the `InvalidUpdate` `read` would raise (returned, to be deleted);
    a key of another type is a `StoreError`, as `read` raises."""
    client.set(KEYS.token("wxapp1"), b"not json")
    found, _ = store.read_with_version("wxapp1", TokenKind.ACCESS_TOKEN, now_s=T0)
    assert isinstance(found, InvalidUpdate)
    client.delete(KEYS.token("wxapp1"))
    client.hset(KEYS.token("wxapp1"), "v", "1")
    with pytest.raises(StoreError, match="WRONGTYPE"):
        store.read_with_version("wxapp1", TokenKind.ACCESS_TOKEN, now_s=T0)


def test_read_with_version_refuses_a_counter_poisoned_beyond_repair(
    client: fakeredis.FakeRedis, store: TokenStore
) -> None:
    """A stored version at the ceiling leaves no version above it: `VersionPoisoned`."""
    ceiling_ms = math.floor(T0 * 1000) + VERSION_AHEAD_MAX_MS
    client.set(KEYS.token("wxapp1"), make_update(version=ceiling_ms).model_dump_json())
    with pytest.raises(VersionPoisoned):
        store.read_with_version("wxapp1", TokenKind.ACCESS_TOKEN, now_s=T0)


def entry(version: int) -> AuditRecord:
    return AuditRecord(KEYS.audit, 100, {"event": "refresh", "version": str(version)})


def audit_versions(client: fakeredis.FakeRedis) -> list[bytes]:
    return [fields[b"version"] for _id, fields in client.xrange(KEYS.audit)]


def test_a_write_adds_its_audit_entry_only_when_it_lands(
    client: fakeredis.FakeRedis, store: TokenStore
) -> None:
    """Written: the entry is in the stream. Refused, fenced or replayed: no entry."""
    update = make_update(version=7)
    written = store.write(update, audit=entry(7))
    assert (written.written, written.audit_error) == (True, None)
    assert audit_versions(client) == [b"7"]
    assert store.write(update, audit=entry(7)).replayed
    assert not store.write(make_update(version=6), audit=entry(6)).written
    client.set(KEYS.leader, "3|someone-else")
    assert store.write(make_update(version=8), fence_owner="me", audit=entry(8)).fenced
    assert audit_versions(client) == [b"7"]
    client.set(KEYS.leader, "4|me")
    assert store.write(make_update(version=9), fence_owner="me", audit=entry(9)).written
    assert audit_versions(client) == [b"7", b"9"]


def test_an_audit_stream_redis_refuses_does_not_undo_the_write(
    client: fakeredis.FakeRedis, store: TokenStore
) -> None:
    """The stream's key holding another type: the token is written, the error reported."""
    client.set(KEYS.audit, "not a stream")
    update = make_update(version=7)
    result = store.write(update, audit=entry(7))
    assert result.written
    assert result.audit_error is not None
    assert "WRONGTYPE" in result.audit_error
    assert store.read("wxapp1") == update
