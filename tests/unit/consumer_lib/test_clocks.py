"""Clocks across hosts (issue 8, item 7), with fake clocks: the subscriber's estimate of its
offset to the producer's clock, the dead band, a lower version after the held token
expired, the snapshot's PTTL, the skew warnings, and refreshes a wall clock set back
cannot postpone."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator

import fakeredis
import pytest

from consumer_lib import ClientSettings, TokenClient, TokenKind
from consumer_lib._client.cache import Offer, TokenCache
from consumer_lib._client.offset import (
    BUCKET_S,
    MAX_DROP_S,
    MIN_CHANGE_S,
    SAFETY_S,
    ClockOffset,
)
from consumer_lib.amqp.messages import SENT_MS_HEADER, parse_sent_ms, sent_s, update_properties
from consumer_lib.wire.keys import KeyLayout
from producer.leadership.clock import JumpProofDeadline
from producer.leadership.clock_skew import SkewMonitor, read_skews
from producer.store.tokens import TokenStore
from tests.conftest import FakeClock
from tests.unit._helpers import T0, make_update

APP = "wxapp1"
ACCESS = TokenKind.ACCESS_TOKEN
DEAD_AMQP = "amqp://guest:guest@127.0.0.1:1/%2F"


# ------------------------------------------------------------------ the offset estimate
def sample(offset: ClockOffset, sent_s: float | None, received_s: float) -> None:
    """One sample from an update whose signed life holds `sent_s` (a day either side)."""
    around_s = received_s if sent_s is None or not math.isfinite(sent_s) else sent_s
    offset.sample(sent_s, received_s, issued_at_s=around_s - 86_400, expires_at_s=around_s + 86_400)


def test_the_offset_is_the_smallest_sample_so_a_delayed_message_does_not_extend_life() -> None:
    """Producer 300 s behind: the samples are 300 s plus each message's delay; one that sat
    30 s in a queue does not raise the estimate while better samples are in the window."""
    offset = ClockOffset()
    for delay_s in (0.020, 0.005, 30.0, 0.010):
        sent_producer_s = T0 + 1000
        sample(offset, sent_producer_s, sent_producer_s + 300 + delay_s)
    assert offset.estimate_s == pytest.approx(300.005)
    # `offset_s` moves in steps of MIN_CHANGE_S or more; it stays short of the estimate by at
    # least SAFETY_S - MIN_CHANGE_S, never above it.
    assert 300.005 - SAFETY_S <= offset.offset_s <= 300.005 - (SAFETY_S - MIN_CHANGE_S)


def test_the_offset_follows_a_clock_that_moved_ahead_by_at_most_max_drop_per_sample() -> None:
    """A new sample below the window's minimum (a producer clock now ahead) lowers the
    estimate by at most `MAX_DROP_S` per sample (issue 18: before, at once, so one forged
    header could make every held token look expired); it gets there sample by sample."""
    offset = ClockOffset()
    sample(offset, T0, T0 + 300.01)
    sample(offset, T0, T0 - 60.0)
    assert offset.offset_s == pytest.approx(300.01 - MAX_DROP_S - SAFETY_S)
    for _ in range(6):
        sample(offset, T0, T0 - 60.0)
    assert offset.offset_s == pytest.approx(-60.0 - SAFETY_S, abs=MIN_CHANGE_S)


def test_offsets_within_the_dead_band_are_zero() -> None:
    """Same host or synced clocks: nothing changes compared with no correction at all."""
    offset = ClockOffset()
    sample(offset, T0, T0 + 0.8)
    sample(offset, T0, T0 + 0.4)
    assert offset.offset_s == 0.0
    assert offset.estimate_ms() == 400


@pytest.mark.parametrize("raw", [None, b"garbage", "12x", True, 3.5, -5, 2**60])
def test_absent_or_garbage_send_times_are_ignored(raw: object) -> None:
    """A header that is absent, not an integer of ms, or out of range gives no sample;
    garbage is counted, absence (an older producer) is not."""
    offset = ClockOffset()
    sample(offset, parse_sent_ms(raw), T0)
    assert offset.offset_s == 0.0
    assert offset.estimate_s is None
    assert offset.invalid_headers == (0 if raw is None else 1)


def test_a_send_time_outside_the_signed_life_is_ignored_and_counted() -> None:
    """A send time before the update was issued or after it expires is no clock."""
    offset = ClockOffset()
    for header_s in (T0 - 2 * 86_400, T0 - 0.001, T0 + 600.001, T0 + 2 * 86_400):
        offset.sample(header_s, T0, issued_at_s=T0, expires_at_s=T0 + 600)
    assert offset.estimate_s is None
    assert offset.invalid_headers == 4


def test_the_publisher_stamps_its_send_time_outside_the_signed_body() -> None:
    """The header carries the producer's clock in ms; the subscriber side parses it."""
    update = make_update()
    props = update_properties(update, now_s=T0 + 12.345, sender="p", user_id=None)
    assert props.headers == {SENT_MS_HEADER: 1_800_000_012_345}
    assert sent_s(props.headers) == pytest.approx(T0 + 12.345)
    assert sent_s(None) is None


def test_a_large_offset_is_warned_about_once(caplog: pytest.LogCaptureFixture) -> None:
    """Beyond 5 s: one WARNING, not one per message."""
    offset = ClockOffset()
    with caplog.at_level(logging.WARNING):
        for _ in range(5):
            sample(offset, T0, T0 + 300)
    warnings = [r for r in caplog.records if "from the producer's" in r.getMessage()]
    assert len(warnings) == 1


# ------------------------------------------------------------------ the cache
@pytest.fixture
def offset() -> ClockOffset:
    return ClockOffset()


def test_a_producer_behind_does_not_make_tokens_expire_early(
    clock: FakeClock, offset: ClockOffset
) -> None:
    """Producer 300 s behind: its expires_at is 300 s early on our clock. With the offset
    the token stays valid for its real remaining life, and no longer."""
    cache = TokenCache(clock, offset)
    clock.now_s = T0 + 300  # the producer's clock reads T0
    sample(offset, T0, clock.now_s + 0.01)
    assert cache.offer(make_update(lifetime_s=600)) is Offer.ACCEPTED
    clock.advance(599.5)
    assert cache.current(APP, ACCESS) is not None
    clock.advance(0.6)
    assert cache.current(APP, ACCESS) is None


def test_a_lower_version_is_accepted_once_the_held_token_expired(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """After a FLUSHALL a writer with a slower clock allocates lower versions. While the
    held token is valid they are refused; once it has expired here one is taken, logged."""
    cache = TokenCache(clock)
    assert cache.offer(make_update(version=5_000, lifetime_s=100)) is Offer.ACCEPTED
    lower = make_update(version=4_000, issued_at=T0 + 50, lifetime_s=7200, value="T-low" * 6)
    assert cache.offer(lower) is Offer.STALE
    clock.advance(100)
    with caplog.at_level(logging.WARNING):
        assert cache.offer(lower) is Offer.ACCEPTED
    assert cache.current(APP, ACCESS) == lower
    assert any("older than the held v5000" in r.getMessage() for r in caplog.records)
    assert cache.offer(lower) is Offer.STALE  # its re-publishes are routine again


def test_an_expired_lower_version_is_still_refused(clock: FakeClock) -> None:
    """The exception is for valid updates only."""
    cache = TokenCache(clock)
    cache.offer(make_update(version=5, lifetime_s=100))
    clock.advance(200)
    assert cache.offer(make_update(version=4, lifetime_s=150)) is Offer.EXPIRED


# ------------------------------------------------------------------ the snapshot's PTTL
@pytest.fixture
def redis_client() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


@pytest.fixture
def real_client(redis_client: fakeredis.FakeRedis) -> Iterator[TokenClient]:
    """A client on the real clock (fakeredis counts TTLs on it), broker unreachable."""
    made = TokenClient(
        ClientSettings(insecure_accept_unsigned=True, amqp_url=DEAD_AMQP),
        redis_client=redis_client,
    )
    yield made
    made.close()


def test_a_snapshot_counts_its_life_from_pttl_not_from_the_producers_clock(
    redis_client: fakeredis.FakeRedis, real_client: TokenClient
) -> None:
    """A producer 300 s behind wrote a token with 100 s left: its expires_at is already
    past on our clock, but the key's PTTL says 100 s, and that is what the client holds."""
    producer_now = time.time() - 300
    TokenStore(redis_client, clock=lambda: producer_now).write(
        make_update(issued_at=producer_now - 20, lifetime_s=120)
    )
    real_client.refresh_from_snapshot()
    ((update, left_s),) = real_client.held().values()
    assert 98 < left_s <= 100
    assert real_client.get_token(APP, timeout=0) == update.value


def test_the_single_snapshot_read_uses_pttl_too(
    redis_client: fakeredis.FakeRedis, real_client: TokenClient
) -> None:
    """`get_token()` with nothing held reads one snapshot: the same rule."""
    producer_now = time.time() - 300
    TokenStore(redis_client, clock=lambda: producer_now).write(
        make_update(issued_at=producer_now, lifetime_s=60)
    )
    assert real_client.get_token(APP, timeout=0)


def test_a_snapshot_never_lives_longer_than_its_lifetime(
    redis_client: fakeredis.FakeRedis, real_client: TokenClient
) -> None:
    """A key whose TTL is longer than the token's whole life (not set from the update)
    cannot stretch it."""
    now_s = time.time()
    update = make_update(issued_at=now_s, lifetime_s=60)
    TokenStore(redis_client).write(update)
    redis_client.pexpire(KeyLayout().token(APP), 3_600_000)
    real_client.refresh_from_snapshot()
    ((_, left_s),) = real_client.held().values()
    assert left_s <= 60


# ------------------------------------------------------------------ producer skew
class RedisAt(fakeredis.FakeRedis):
    """fakeredis whose `TIME` reads a clock of the test's."""

    redis_now_s = T0

    def time(self) -> tuple[int, int]:  # type: ignore[override]
        whole = math.floor(self.redis_now_s)
        return whole, round((self.redis_now_s - whole) * 1e6)


def test_a_producer_clock_skewed_from_redis_is_warned_once_and_shown(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """300 s ahead of Redis: one WARNING however many ticks, the figure in the hash that
    `wxtoken status` reads; back in sync: one INFO."""
    client = RedisAt()
    steady = FakeClock(0.0)
    monitor = SkewMonitor(client, KeyLayout(), producer_id="p1", clock=clock, monotonic=steady)
    client.redis_now_s = clock.now_s - 300
    with caplog.at_level(logging.INFO):
        for _ in range(5):
            monitor.check()
            steady.advance(31)
        client.redis_now_s = clock.now_s
        monitor.check()
    messages = [
        r.getMessage() for r in caplog.records if r.name == "producer.leadership.clock_skew"
    ]
    assert len([m for m in messages if "+300.0 s from Redis" in m]) == 1
    assert len([m for m in messages if "back within" in m]) == 1
    (report,) = read_skews(client, KeyLayout())
    assert report.producer_id == "p1"
    assert report.skew_s == 0


def test_skew_checks_are_rate_limited(clock: FakeClock) -> None:
    """Lease ticks come every few seconds; `TIME` is asked at most every 30 s."""
    client = RedisAt()
    steady = FakeClock(0.0)
    calls = []
    original = client.time

    def counting_time() -> tuple[int, int]:
        calls.append(1)
        return original()

    client.time = counting_time  # type: ignore[method-assign]
    monitor = SkewMonitor(client, KeyLayout(), producer_id="p1", clock=clock, monotonic=steady)
    for _ in range(10):
        monitor.check()
        steady.advance(5)
    assert len(calls) == 2


# ------------------------------------------------------------------ refreshes and jumps
def test_a_wall_clock_set_back_does_not_postpone_a_deadline() -> None:
    """A refresh due in 100 s by a clock that ran 300 s ahead: NTP sets it back 300 s,
    the deadline still comes 100 s after it was set, by the steady clock."""
    wall, steady = FakeClock(T0 + 300), FakeClock(0.0)
    deadline = JumpProofDeadline(wall, steady)
    at_s = wall.now_s + 100
    assert deadline.effective("v1", at_s) == at_s
    wall.now_s -= 300  # corrected
    wall.advance(60)
    steady.advance(60)
    assert deadline.effective("v1", at_s) == pytest.approx(wall.now_s + 40)
    wall.advance(40)
    steady.advance(40)
    assert wall.now_s >= deadline.effective("v1", at_s)


def test_a_steady_clock_alone_changes_nothing() -> None:
    """Without jumps the wall deadline is the one used."""
    wall, steady = FakeClock(T0), FakeClock(0.0)
    deadline = JumpProofDeadline(wall, steady)
    for _ in range(3):
        wall.advance(10)
        steady.advance(10)
        assert deadline.effective("v1", T0 + 100) == pytest.approx(T0 + 100)


def test_the_hot_path_follows_an_offset_learnt_after_the_token_arrived(
    clock: FakeClock, offset: ClockOffset
) -> None:
    """A token taken while the clocks seemed in sync, then a message shows the producer is
    300 s behind: what `get_token` reads (`entries`) moves its expiry by the offset."""
    cache = TokenCache(clock, offset)
    clock.now_s = T0 + 300  # the producer's clock reads T0
    update = make_update(lifetime_s=600)
    assert cache.offer(update) is Offer.ACCEPTED
    assert cache.entries[(APP, ACCESS)] == (update.value, update.expires_at)
    sample(offset, T0, clock.now_s + 0.01)
    value, expires_local = cache.entries[(APP, ACCESS)]
    assert value == update.value
    assert expires_local == pytest.approx(update.expires_at + 300.01 - SAFETY_S)
    assert expires_local == cache.expires_local(update)


def test_get_token_serves_the_fast_entry_only_while_it_is_valid(clock: FakeClock) -> None:
    """`get_token` by kind, by its wire value and by a ticket's name; past the expiry it
    no longer returns the held token (it waits, then says why)."""
    from consumer_lib.errors import TokenUnavailable
    from consumer_lib.testing import stub_client

    tokens, stub = stub_client(clock=clock)
    stub.push_token(APP, "TOKEN-A", expires_in_s=60)
    stub.push_token(APP, "TICKET-A", expires_in_s=60, kind=TokenKind.JSAPI_TICKET)
    assert tokens.get_token(APP) == "TOKEN-A"
    assert tokens.get_token(APP, kind="access_token") == "TOKEN-A"
    assert tokens.get_token(APP, kind="jsapi") == "TICKET-A"
    assert tokens.get_ticket(APP, "jsapi") == "TICKET-A"
    clock.advance(60.0)
    with pytest.raises(TokenUnavailable):
        tokens.get_token(APP, timeout=0.01)
    with pytest.raises(ValueError, match="unknown credential kind"):
        tokens.get_token(APP, kind="no_such_kind")
    with pytest.raises(ValueError, match="unknown credential kind"):
        tokens.get_token(APP, kind=["access_token"])  # type: ignore[arg-type]
    tokens.close()


def test_a_burst_read_late_does_not_pass_for_a_clock_offset() -> None:
    """Same clocks; a burst of 500 re-publishes read by a busy subscriber, each later than
    the one before (up to 3 s). Samples from the last five minutes include prompt ones, so
    the offset stays 0, and the estimate is not recomputed for every message."""
    offset = ClockOffset()
    changes: list[float] = []
    offset.on_change.append(lambda: changes.append(offset.offset_s))
    now_s = T0
    for _ in range(20):  # prompt messages for a while
        sample(offset, now_s - 0.003, now_s)
        now_s += BUCKET_S
    for n in range(500):  # the late burst
        sample(offset, now_s, now_s + 3.0 * n / 500)
    assert offset.offset_s == 0.0
    assert changes == []


def test_a_producer_clock_behind_moves_the_offset_once_not_per_message() -> None:
    offset = ClockOffset()
    changes: list[float] = []
    offset.on_change.append(lambda: changes.append(offset.offset_s))
    for n in range(1000):
        received_s = T0 + n * 0.1
        sample(offset, received_s - 300.0 - 0.001 * (n % 7), received_s)
    assert len(changes) <= 3, changes
    assert offset.offset_s == pytest.approx(300.0 - SAFETY_S, abs=MIN_CHANGE_S + 0.01)
