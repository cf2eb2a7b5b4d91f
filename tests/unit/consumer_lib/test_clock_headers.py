"""The unsigned send-time header cannot take tokens away nor stretch them (issue 18, item 1):
only verified new versions of the producer's refresh sample the clock offset, inside their
signed life, one sample moves it at most `MAX_DROP_S`, and a pushed token is never held
longer than its signed lifetime after it arrived."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from consumer_lib import TokenClient, TokenKind, TokenSource
from consumer_lib._client.offset import MAX_DROP_S, SAFETY_S
from consumer_lib.errors import TokenUnavailable
from consumer_lib.testing import StubTransport, stub_client
from tests.conftest import FakeClock
from tests.unit._helpers import make_update

APPS = [f"wxapp{n}" for n in range(10)]
DAY_S = 86_400.0


@pytest.fixture
def client(clock: FakeClock) -> Iterator[tuple[TokenClient, StubTransport]]:
    tokens, stub = stub_client(clock=clock)
    yield tokens, stub
    tokens.close()


def push_fleet(
    stub: StubTransport, clock: FakeClock, versions: itertools.count[int], lifetime_s: float = 7200
) -> None:
    """A new version for every app, as the producer sends it (header = now, same clock)."""
    for n, app in enumerate(APPS):
        version = next(versions)
        update = make_update(
            app_id=app,
            value=f"TOKEN-{app}-{version:08d}-xxxxxxxx",
            version=version,
            issued_at=clock.now_s,
            lifetime_s=lifetime_s + n,
        )
        stub.push(update, sent_s=clock.now_s + 0.005)


def available(tokens: TokenClient) -> int:
    served = 0
    for app in APPS:
        try:
            tokens.get_token(app, timeout=0)
            served += 1
        except TokenUnavailable:
            pass
    return served


def test_a_garbage_message_with_a_send_time_a_day_ahead_changes_nothing(
    client: tuple[TokenClient, StubTransport], clock: FakeClock
) -> None:
    """20 bytes of garbage with its header at now + 86,399 s: before, every subscriber's
    offset went to -86,399 s, every app was unavailable and the next genuine version was
    dropped as expired; now the header of an unverified body is not even read."""
    tokens, stub = client
    versions = itertools.count(1)
    push_fleet(stub, clock, versions)
    clock.advance(1)
    stub.push_raw(b"x" * 20, sent_s=clock.now_s + DAY_S - 1)
    assert tokens._offset.offset_s == 0.0
    assert available(tokens) == len(APPS)
    clock.advance(1)
    push_fleet(stub, clock, versions)
    assert tokens.stats_dict()["expired"] == 0
    assert available(tokens) == len(APPS)


def test_an_override_stamped_by_a_clock_8_hours_fast_does_not_move_the_offset(
    client: tuple[TokenClient, StubTransport], clock: FakeClock
) -> None:
    """`wxtoken set` from a laptop 8 h fast stamps its send time (and `issued_at`) from that
    clock: before, 9 of 10 apps became unavailable on every subscriber; an override is no
    sample of the producer's clock. It lives its signed 600 s from its arrival, no longer."""
    tokens, stub = client
    versions = itertools.count(1)
    push_fleet(stub, clock, versions)
    fast_s = clock.now_s + 8 * 3600
    override = make_update(
        app_id=APPS[0],
        value="TOKEN-override-from-a-fast-laptop",
        version=10_000,
        issued_at=fast_s,
        lifetime_s=600,
        source=TokenSource.OVERRIDE,
        producer_id="ops:laptop",
    )
    stub.push(override, sent_s=fast_s)
    assert tokens._offset.offset_s == 0.0
    assert tokens._offset.estimate_s == pytest.approx(-0.005, abs=1e-3)
    assert available(tokens) == len(APPS)
    assert tokens.get_token(APPS[0], timeout=0) == override.value
    clock.advance(599)
    assert tokens.get_token(APPS[0], timeout=0) == override.value
    clock.advance(1)
    with pytest.raises(TokenUnavailable):
        tokens.get_token(APPS[0], timeout=0)


@pytest.mark.parametrize("message", ["garbage", "replay", "new-version"])
def test_a_header_22_hours_old_cannot_make_a_subscriber_serve_an_expired_token(
    client: tuple[TokenClient, StubTransport], clock: FakeClock, message: str
) -> None:
    """Five minutes without a producer message, then one with its header 22 h in the past
    (on garbage, on a replay of the held update, on a genuine new version): before, the
    offset became +22 h and the subscriber served a token WeChat had dropped; now the token
    ends at its real expiry."""
    tokens, stub = client
    held = make_update(app_id=APPS[0], issued_at=clock.now_s, lifetime_s=600)
    stub.push(held, sent_s=clock.now_s)
    clock.advance(400)
    past_s = clock.now_s - 22 * 3600
    if message == "garbage":
        stub.push_raw(b"{}" * 10, sent_s=past_s)
    elif message == "replay":
        stub.push(held, sent_s=past_s)
    else:
        newer = make_update(app_id=APPS[1], issued_at=clock.now_s - 10, lifetime_s=600)
        stub.push(newer, sent_s=past_s)
        assert tokens._offset.invalid_headers == 1
    assert tokens._offset.offset_s == 0.0
    clock.advance(200 - SAFETY_S - 0.05)
    assert tokens.get_token(APPS[0], timeout=0) == held.value
    clock.advance(SAFETY_S + 0.05)
    with pytest.raises(TokenUnavailable):
        tokens.get_token(APPS[0], timeout=0)


def test_one_sample_lowers_the_offset_by_at_most_max_drop(
    client: tuple[TokenClient, StubTransport], clock: FakeClock
) -> None:
    """A genuine new version whose header was forged to the end of its signed life (a race
    won against the producer's own copy): the sample lies in the life, but one sample moves
    the offset at most `MAX_DROP_S`, so held tokens stay served and the next arrives."""
    tokens, stub = client
    versions = itertools.count(1)
    push_fleet(stub, clock, versions)
    fresh = make_update(app_id="wxother", version=1, issued_at=clock.now_s, lifetime_s=7200)
    stub.push(fresh, sent_s=fresh.expires_at)
    assert tokens._offset.offset_s == pytest.approx(-MAX_DROP_S - SAFETY_S, abs=0.01)
    assert available(tokens) == len(APPS)
    push_fleet(stub, clock, versions)
    assert tokens.stats_dict()["expired"] == 0
    assert available(tokens) == len(APPS)


def test_a_pushed_token_is_never_held_longer_than_its_lifetime_after_arrival(
    clock: FakeClock,
) -> None:
    """Whatever the offset says (here +1 h, as a header could have made it), a token pushed
    with 600 s of signed life is served 600 s from its arrival, less `SAFETY_S` (as the
    offset), and not a moment longer."""
    tokens, stub = stub_client(clock=clock)
    try:
        tokens._offset.offset_s = 3600.0
        update = make_update(app_id=APPS[0], issued_at=clock.now_s, lifetime_s=600)
        stub.push(update)
        clock.advance(600 - SAFETY_S - 0.05)
        assert tokens.get_token(APPS[0], timeout=0) == update.value
        clock.advance(0.05)
        with pytest.raises(TokenUnavailable):
            tokens.get_token(APPS[0], timeout=0)
    finally:
        tokens.close()


def test_samples_come_only_from_new_versions_of_the_producers_refresh(
    client: tuple[TokenClient, StubTransport], clock: FakeClock
) -> None:
    """A re-publish of the held version, whatever its header, gives no sample; a new one
    of the producer's refresh does (a producer 300 s behind: taken at once)."""
    tokens, stub = client
    update = make_update(app_id=APPS[0], issued_at=clock.now_s - 300, lifetime_s=7200)
    stub.push(update, sent_s=clock.now_s - 300)
    assert tokens._offset.offset_s == pytest.approx(300 - SAFETY_S)
    stub.push(update, sent_s=update.expires_at)
    assert tokens._offset.offset_s == pytest.approx(300 - SAFETY_S)
    assert tokens.get(APPS[0], timeout=0).kind is TokenKind.ACCESS_TOKEN
