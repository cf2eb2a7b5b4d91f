"""`TokenCache` and `TokenClient` fed by hand: newest version wins, nothing expired comes out."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import fakeredis
import pytest
import redis

from consumer_lib import (
    ClientSettings,
    TokenClient,
    TokenKind,
    TokenSource,
    TokenUnavailable,
    TokenUpdate,
)
from consumer_lib._client.cache import Offer, TokenCache
from consumer_lib.testing import StubTransport
from consumer_lib.wire.keys import KeyLayout
from producer.store.tokens import TokenStore
from tests.conftest import FakeClock
from tests.unit._helpers import T0, make_update, unreachable_redis
from tests.waiting import wait_for

APP = "wxapp1"
ACCESS = TokenKind.ACCESS_TOKEN
#: Nothing listens on port 1, so a started broker thread fails at once and retries.
DEAD_AMQP = "amqp://guest:guest@127.0.0.1:1/%2F"


def token(version: int, *, lifetime_s: float = 7200, issued_at: float = T0) -> TokenUpdate:
    """An update of APP whose value tells its version."""
    return make_update(
        version=version,
        value=f"TOKEN-v{version:04d}-{'z' * 30}",
        issued_at=issued_at,
        lifetime_s=lifetime_s,
    )


# ------------------------------------------------------------------ TokenCache
@pytest.fixture
def cache(clock: FakeClock) -> TokenCache:
    return TokenCache(clock)


def test_cache_newer_version_wins(cache: TokenCache) -> None:
    """A higher version replaces the held one."""
    assert cache.offer(token(1)) is Offer.ACCEPTED
    assert cache.offer(token(2)) is Offer.ACCEPTED
    assert cache.current(APP, ACCESS) == token(2)


@pytest.mark.parametrize("version", [2, 1])
def test_cache_same_or_older_is_stale(cache: TokenCache, version: int) -> None:
    """The same or an older version is refused as stale and changes nothing."""
    cache.offer(token(2))
    assert cache.offer(token(version, lifetime_s=9000)) is Offer.STALE
    assert cache.current(APP, ACCESS) == token(2)


def test_cache_stale_even_if_it_lives_longer(cache: TokenCache) -> None:
    """An older version with a later expiry still loses to the newer one (it may be revoked)."""
    cache.offer(token(5, lifetime_s=60))
    assert cache.offer(token(4, lifetime_s=80_000)) is Offer.STALE


def test_cache_expired_is_refused(cache: TokenCache, clock: FakeClock) -> None:
    """An update already past its expiry is refused and nothing is held."""
    clock.advance(7200)
    assert cache.offer(token(1)) is Offer.EXPIRED
    assert cache.held(APP, ACCESS) is None


def test_cache_current_is_none_after_expiry(cache: TokenCache, clock: FakeClock) -> None:
    """`current` returns the token until just before expires_at, then None."""
    cache.offer(token(1, lifetime_s=30))
    clock.advance(29.999)
    assert cache.current(APP, ACCESS) == token(1, lifetime_s=30)
    clock.advance(0.001)
    assert cache.current(APP, ACCESS) is None
    assert cache.held(APP, ACCESS) == token(1, lifetime_s=30)


def test_cache_expired_held_does_not_block_newer(cache: TokenCache, clock: FakeClock) -> None:
    """After the held token expires a newer version is accepted and served."""
    cache.offer(token(1, lifetime_s=30))
    clock.advance(40)
    fresh = token(2, issued_at=clock())
    assert cache.offer(fresh) is Offer.ACCEPTED
    assert cache.current(APP, ACCESS) == fresh


def test_cache_keys_by_app_and_kind(cache: TokenCache) -> None:
    """Apps and kinds are held separately."""
    other_app = make_update(app_id="wxother", version=1)
    ticket = make_update(version=1, kind=TokenKind.JSAPI_TICKET, value="TICKET-0123456789")
    for update in (token(9), other_app, ticket):
        assert cache.offer(update) is Offer.ACCEPTED
    assert cache.current("wxother", ACCESS) == other_app
    assert cache.current(APP, TokenKind.JSAPI_TICKET) == ticket
    assert len(cache.snapshot()) == 3


def test_cache_wait_for_returns_when_another_thread_offers(cache: TokenCache) -> None:
    """A reader blocked in `wait_for` is woken by the offer itself, long before its timeout.

    Without the offer's notify the reader would sleep its whole 60 s and the join fail.
    """
    waiting = threading.Event()
    got: list[TokenUpdate | None] = []

    def reader() -> None:
        waiting.set()
        got.append(cache.wait_for(APP, ACCESS, timeout_s=60))

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    assert waiting.wait(10)
    assert got == []  # nothing held yet, so it cannot have returned
    cache.offer(token(3))
    thread.join(20)
    assert not thread.is_alive()
    assert got == [token(3)]


def test_cache_wait_for_returns_held_at_once(cache: TokenCache) -> None:
    """With a valid token held, `wait_for` returns it without waiting."""
    cache.offer(token(1))
    assert cache.wait_for(APP, ACCESS, timeout_s=0) == token(1)


def test_cache_wait_for_times_out_with_none(cache: TokenCache) -> None:
    """With nothing offered, `wait_for` returns None after its timeout."""
    assert cache.wait_for(APP, ACCESS, timeout_s=0.05) is None


def test_cache_wait_for_ignores_other_apps(cache: TokenCache) -> None:
    """A token for another app wakes a reader but is not what it returns."""
    waiting = threading.Event()
    got: list[TokenUpdate | None] = []

    def reader() -> None:
        waiting.set()
        got.append(cache.wait_for(APP, ACCESS, timeout_s=30))

    thread = threading.Thread(target=reader)
    thread.start()
    assert waiting.wait(10)
    cache.offer(make_update(app_id="wxother", version=1))
    cache.offer(token(1))
    thread.join(10)
    assert not thread.is_alive()
    assert got == [token(1)]


def test_cache_wait_for_never_returns_expired(cache: TokenCache, clock: FakeClock) -> None:
    """A held token that expired is not what `wait_for` returns."""
    cache.offer(token(1, lifetime_s=30))
    clock.advance(31)
    assert cache.wait_for(APP, ACCESS, timeout_s=0.05) is None


# ------------------------------------------------------------------ TokenClient
@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No WXTOKEN_* variable or `.env` file changes the settings under test."""
    for name in list(os.environ):
        if name.upper().startswith("WXTOKEN_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def make_client(
    clock: FakeClock, redis_client: redis.Redis, transport: StubTransport | None = None
) -> TokenClient:
    """A client fed by `transport` (a miss starts it), else by a dead broker."""
    settings = ClientSettings(
        insecure_accept_unsigned=True, amqp_url=DEAD_AMQP, reconnect_max_s=0.5, poll_interval_s=0.5
    )
    return TokenClient(
        settings, redis_client=redis_client, clock=clock, name="unit-test", transport=transport
    )


@pytest.fixture
def stub() -> StubTransport:
    """What the broker would deliver; the tests push through it."""
    return StubTransport(connected=False)


@pytest.fixture
def fake_redis() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


@pytest.fixture
def client(
    clean_env: None, clock: FakeClock, fake_redis: fakeredis.FakeRedis, stub: StubTransport
) -> Iterator[TokenClient]:
    made = make_client(clock, fake_redis, stub)
    yield made
    made.close()


@pytest.fixture
def store(fake_redis: fakeredis.FakeRedis) -> TokenStore:
    """The producer's side of the snapshot the client reads."""
    return TokenStore(fake_redis)


def test_client_serves_pushed_token(client: TokenClient, stub: StubTransport) -> None:
    """A message received is served by `get_token` from memory."""
    stub.push_raw(token(1).encode())
    assert client.get_token(APP) == token(1).value
    assert client.get(APP) == token(1)
    assert client.stats.accepted == 1
    assert not client._started


def test_client_drops_older_version_and_counts_it(client: TokenClient, stub: StubTransport) -> None:
    """An older message after a newer one is dropped and counted as stale."""
    stub.push_raw(token(2).encode())
    stub.push_raw(token(1).encode())
    stub.push_raw(token(2).encode())
    assert client.get_token(APP) == token(2).value
    assert client.stats.stale == 2
    assert client.stats.accepted == 1


def test_client_counts_expired_message(
    client: TokenClient, clock: FakeClock, stub: StubTransport
) -> None:
    """A message that arrives already expired is dropped and counted."""
    clock.advance(8000)
    stub.push_raw(token(1).encode())
    assert client.stats.expired == 1
    assert client.stats.accepted == 0


@pytest.mark.parametrize(
    "body",
    [
        b"not json at all",
        b"",
        b"\xff\xfe\x00",
        b"[]",
        token(1).encode().replace(b'"version":1', b'"version":0'),
        token(1).encode().replace(b"TOKEN-v0001", b"TOKEN v0001"),
        token(1).encode()[:-10],
    ],
)
def test_client_rejects_garbage_logging_one_line_without_token(
    client: TokenClient, caplog: pytest.LogCaptureFixture, body: bytes, stub: StubTransport
) -> None:
    """Garbage is counted as rejected and logged as one line that holds no token."""
    caplog.set_level(logging.DEBUG, logger="consumer_lib")
    stub.push_raw(body)
    assert client.stats.rejected == 1
    assert client.stats.accepted == 0
    rejections = [r for r in caplog.records if "rejected" in r.getMessage()]
    assert len(rejections) == 1
    line = rejections[0].getMessage()
    assert "\n" not in line
    assert "v0001" not in line
    assert "zzzzzz" not in line


def test_client_keeps_serving_after_garbage(client: TokenClient, stub: StubTransport) -> None:
    """A bad message between good ones does not disturb the held token."""
    stub.push_raw(token(1).encode())
    stub.push_raw(b"{garbage")
    assert client.get_token(APP) == token(1).value


def test_client_refresh_from_snapshot(client: TokenClient, store: TokenStore) -> None:
    """Tokens stored in Redis are picked up by a snapshot read."""
    store.write(token(5))
    store.write(make_update(app_id="wxother", version=3, value="OTHER-TOKEN-0123456789"))
    client.refresh_from_snapshot()
    assert client.get_token(APP) == token(5).value
    assert client.get_token("wxother") == "OTHER-TOKEN-0123456789"
    assert client.stats.snapshot_reads == 1
    assert client.stats.accepted == 2


def test_client_older_snapshot_is_dropped(
    client: TokenClient, store: TokenStore, stub: StubTransport
) -> None:
    """A snapshot older than the pushed token does not replace it."""
    store.write(token(4))
    stub.push_raw(token(6).encode())
    client.refresh_from_snapshot()
    assert client.get_token(APP) == token(6).value
    assert client.stats.stale == 1


def test_client_corrupt_snapshot_is_rejected(
    client: TokenClient,
    store: TokenStore,
    fake_redis: fakeredis.FakeRedis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A corrupt value in Redis is counted as rejected; other apps still load."""
    store.write(token(1))
    store.write(make_update(app_id="wxbroken", version=1, value="BROKEN-TOKEN-0123456789"))
    fake_redis.set(KeyLayout().token("wxbroken"), b'{"value": "BROKEN-TOKEN-0123456789"}')
    client.refresh_from_snapshot()
    assert client.stats.rejected == 1
    assert client.get_token(APP) == token(1).value
    assert "wxbroken" in caplog.text
    assert "BROKEN-TOKEN-0123456789" not in caplog.text


def test_get_token_never_returns_expired(
    client: TokenClient, clock: FakeClock, stub: StubTransport
) -> None:
    """Once the clock passes expires_at, `get_token` raises instead of returning the old token."""
    stub.push_raw(token(1, lifetime_s=30).encode())
    clock.advance(29)
    assert client.get_token(APP, timeout=0) == token(1).value
    clock.advance(1)
    with pytest.raises(TokenUnavailable) as info:
        client.get_token(APP, timeout=0.2)
    assert "expired" in str(info.value)
    assert token(1).value not in str(info.value)


def test_on_update_called_once_per_accepted(client: TokenClient, stub: StubTransport) -> None:
    """Callbacks see each accepted update exactly once, not stale or garbage ones."""
    seen: list[int] = []
    client.on_update(lambda update: seen.append(update.version))
    for body in (token(1), token(1), token(3), token(2)):
        stub.push_raw(body.encode())
    stub.push_raw(b"garbage")
    stub.push_raw(token(9).encode())  # the last one: once it is seen, all before it were
    wait_for(lambda: 9 in seen, message="the callback of v9")
    assert seen == [1, 3, 9]


def test_raising_callback_does_not_break_delivery(
    client: TokenClient, caplog: pytest.LogCaptureFixture, stub: StubTransport
) -> None:
    """A callback that raises is logged; later callbacks and later updates still go through."""
    seen: list[int] = []

    def broken(update: TokenUpdate) -> None:
        raise RuntimeError("callback bug")

    client.on_update(broken)
    client.on_update(lambda update: seen.append(update.version))
    stub.push_raw(token(1).encode())
    stub.push_raw(token(2).encode())
    wait_for(lambda: 2 in seen, message="the callback of v2")
    assert seen == [1, 2]
    assert client.get_token(APP) == token(2).value
    assert "callback" in caplog.text
    assert token(2).value not in caplog.text


def test_unknown_app_says_redis_has_no_snapshot(client: TokenClient) -> None:
    """Waiting for an app nobody produces fails naming the app and the empty snapshot."""
    with pytest.raises(TokenUnavailable) as info:
        client.get_token("wxnobody", timeout=0.2)
    message = str(info.value)
    assert "wxnobody" in message
    assert "Redis has no valid snapshot" in message
    assert "\n" not in message


def test_miss_reads_snapshot_of_that_app(client: TokenClient, store: TokenStore) -> None:
    """A token stored in Redis after start-up is found by the first `get_token` for it."""
    store.write(token(7))
    assert client.get_token(APP, timeout=5) == token(7).value


def test_unreachable_redis_is_named(clean_env: None, clock: FakeClock) -> None:
    """With Redis unreachable the error says so, and snapshot failures are counted."""
    client = make_client(clock, unreachable_redis())
    try:
        with pytest.raises(TokenUnavailable) as info:
            client.get_token("wxnobody", timeout=0.2)
        message = str(info.value)
        assert "wxnobody" in message
        assert "Redis unreachable" in message
        assert client.stats.snapshot_failures >= 1
    finally:
        client.close()


def test_unreachable_redis_does_not_hide_pushed_tokens(
    clean_env: None, clock: FakeClock, stub: StubTransport
) -> None:
    """Tokens pushed over the broker are served even when Redis is away."""
    client = make_client(clock, unreachable_redis(), stub)
    try:
        client.refresh_from_snapshot()
        assert client.last_store_error is not None
        stub.push_raw(token(1).encode())
        assert client.get_token(APP) == token(1).value
    finally:
        client.close()


def test_closed_client_cannot_start(client: TokenClient) -> None:
    """After `close()` a miss does not silently restart the client."""
    client.close()
    with pytest.raises(RuntimeError, match="closed"):
        client.get_token("wxnobody", timeout=0.1)


def test_token_source_is_visible(client: TokenClient, stub: StubTransport) -> None:
    """`get()` tells an override from a scheduled refresh."""
    override = make_update(version=9, value="OVERRIDE-0123456789", source=TokenSource.OVERRIDE)
    stub.push_raw(override.encode())
    assert client.get(APP).source is TokenSource.OVERRIDE


def test_client_get_ticket_serves_pushed_ticket_and_refuses_tokens(
    client: TokenClient, stub: StubTransport
) -> None:
    """get_ticket reads the ticket kind; asking it for an access token is a ValueError."""
    update = make_update(kind=TokenKind.WX_CARD_TICKET, value="CARD-TICKET-0001-zzzzzzzz")
    stub.push_raw(update.encode())
    assert client.get_ticket("wxapp1", "wx_card") == "CARD-TICKET-0001-zzzzzzzz"
    assert client.get_token("wxapp1", kind="wx_card_ticket") == "CARD-TICKET-0001-zzzzzzzz"
    with pytest.raises(ValueError, match="not a ticket"):
        client.get_ticket("wxapp1", "access_token")
    with pytest.raises(ValueError, match="unknown credential kind"):
        client.get_ticket("wxapp1", "jsapi2")
    with pytest.raises(TokenUnavailable):
        client.get_ticket("wxapp1", "jsapi", timeout=0)
