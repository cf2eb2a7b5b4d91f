"""`AppRefresher` driven step by step on a fake clock, with fakeredis and a fake upstream."""

from __future__ import annotations

import itertools
import logging
import math
from collections import deque
from collections.abc import Callable, Iterator

import fakeredis
import pytest
import requests
import responses
from pydantic import SecretStr

from consumer_lib import TokenKind, TokenSource, TokenUpdate
from consumer_lib.wire.keys import KeyLayout
from consumer_lib.wire.refresh_request import RefreshRequest
from producer.apps import AppConfig, TokenApi
from producer.refresh.fetching import UNCHANGED_MIN_RETRY_S
from producer.refresh.refresher import RETRY_ON_REQUEST_MIN_S, RefreshTiming
from producer.store.tokens import TokenStore
from producer.upstream.errcodes import FailureKind
from producer.upstream.wechat import FetchedToken, UpstreamError, WeChatClient, parse_token_answer
from tests.conftest import FakeClock
from tests.unit._helpers import T0, make_update
from tests.unit.producer.builders import build_refresher

APP_ID = "wxapp1"
SECRET = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
APP = AppConfig(app_id=APP_ID, secret=SecretStr(SECRET))


def upstream_error(errcode: int) -> UpstreamError:
    """The error WeChat's answer with `errcode` turns into."""
    body = f'{{"errcode": {errcode}, "errmsg": "refused rid: 1"}}'.encode()
    try:
        parse_token_answer(200, body)
    except UpstreamError as exc:
        return exc
    raise AssertionError("errcode answer was accepted")


TRANSIENT = UpstreamError("HTTP 502", kind=FailureKind.TRANSIENT)


class FakeFetcher:
    """Hands out queued tokens or errors, then fresh unique tokens; counts calls."""

    def __init__(self, clock: FakeClock, expires_in: int = 7200) -> None:
        self.clock = clock
        self.expires_in = expires_in
        self.queue: deque[FetchedToken | UpstreamError] = deque()
        self.fetch_times: list[float] = []
        self.during_next_fetch: Callable[[], None] | None = None
        self._issued = 0

    @property
    def calls(self) -> int:
        return len(self.fetch_times)

    def give(self, *items: FetchedToken | UpstreamError) -> None:
        self.queue.extend(items)

    def fetch(self, app: AppConfig, *, force_refresh: bool = False) -> FetchedToken:
        assert app.app_id == APP_ID
        assert not force_refresh
        self.fetch_times.append(self.clock())
        if self.during_next_fetch is not None:
            hook, self.during_next_fetch = self.during_next_fetch, None
            hook()
        if self.queue:
            item = self.queue.popleft()
            if isinstance(item, UpstreamError):
                raise item
            return item
        self._issued += 1
        return FetchedToken(
            value=f"TOKEN-{self._issued:04d}-{'x' * 40}", expires_in_s=self.expires_in
        )


class Rig:
    """A refresher wired to fakeredis, a fake upstream, a list as publisher, and a fake clock."""

    def __init__(
        self,
        clock: FakeClock,
        *,
        expires_in: int = 7200,
        timing: RefreshTiming | None = None,
        rand: Callable[[], float] = lambda: 0.5,
        fetcher: object | None = None,
        app: AppConfig = APP,
    ) -> None:
        self.clock = clock
        self.server = fakeredis.FakeServer()
        self.redis = fakeredis.FakeRedis(server=self.server)
        self.store = TokenStore(self.redis)
        self.fetcher = FakeFetcher(clock, expires_in)
        self.published: list[TokenUpdate] = []
        self.timing = timing or RefreshTiming()
        self.refresher = build_refresher(
            app,
            fetcher=fetcher or self.fetcher,  # type: ignore[arg-type]
            store=self.store,
            publish=self.published.append,
            timing=self.timing,
            clock=clock,
            rand=rand,
        )
        self.delays: list[float] = []

    def step(self) -> float:
        """One step; every update it publishes must be valid now. Returns the delay."""
        before = len(self.published)
        delay = self.refresher.step()
        for update in self.published[before:]:
            assert update.is_valid_at(self.clock()), f"published expired {update}"
        assert delay > 0
        self.delays.append(delay)
        return delay

    def step_and_wait(self) -> float:
        """One step, then advance the clock by the delay it asked for."""
        delay = self.step()
        self.clock.advance(delay)
        return delay

    def run_until(self, end_s: float) -> None:
        """Step and advance until the clock reaches `end_s`, checking what subscribers see."""
        while self.clock() < end_s:
            latest = self.latest()
            if latest is not None:
                # Whatever subscribers hold right now has not expired: replaced in time.
                assert latest.is_valid_at(self.clock()), f"{latest} expired before replacement"
            self.step_and_wait()

    def latest(self) -> TokenUpdate | None:
        """The highest version published so far."""
        return max(self.published, key=lambda u: u.version, default=None)

    def stored(self) -> TokenUpdate | None:
        return self.store.read(APP_ID)

    def other_producer_writes(
        self, *, value: str, lifetime_s: float, source: TokenSource = TokenSource.REFRESH
    ) -> TokenUpdate:
        """Another producer (or an operator) writes a newer token into Redis now."""
        other = TokenStore(fakeredis.FakeRedis(server=self.server))
        now = self.clock()
        update = make_update(
            value=value,
            version=other.next_version(APP_ID, TokenKind.ACCESS_TOKEN, now_s=now),
            issued_at=now,
            lifetime_s=lifetime_s,
            source=source,
            producer_id="someone-else",
        )
        assert other.write(update).written
        return update


@pytest.fixture
def rig(clock: FakeClock) -> Iterator[Rig]:
    made = Rig(clock)
    yield made
    made.redis.close()


# ------------------------------------------------------------------ the normal cycle
def test_first_step_fetches_writes_and_publishes(rig: Rig) -> None:
    """The first step fetches once, stores the token in Redis and publishes it once."""
    delay = rig.step()
    assert rig.fetcher.calls == 1
    assert len(rig.published) == 1
    update = rig.published[0]
    assert rig.stored() == update
    assert rig.refresher.held == update
    assert update.app_id == APP_ID
    assert update.source is TokenSource.REFRESH
    assert update.producer_id == "prod-test"
    assert update.issued_at == T0
    assert update.expires_at == T0 + 7200
    assert update.version >= math.floor(T0 * 1000)
    assert delay == rig.timing.republish_interval_s


@pytest.mark.parametrize("expires_in", [30, 7200])
def test_one_fetch_per_lifetime_and_never_expired(clock: FakeClock, expires_in: int) -> None:
    """Over ten lifetimes each token is fetched once, at expires_at - margin, never too late."""
    rig = Rig(clock, expires_in=expires_in)
    margin = min(rig.timing.margin_max_s, expires_in * rig.timing.margin_ratio)
    rig.run_until(T0 + 10 * expires_in)
    interval = expires_in - margin
    assert rig.fetcher.calls == math.floor(10 * expires_in / interval) + 1
    gaps = [b - a for a, b in itertools.pairwise(rig.fetcher.fetch_times)]
    assert gaps == pytest.approx([interval] * len(gaps))
    # Each fetched token got its own version, published with the lifetime upstream gave.
    fresh = {u.version: u for u in rig.published}
    assert len(fresh) == rig.fetcher.calls
    assert all(u.expires_at - u.issued_at == expires_in for u in fresh.values())
    assert sorted(fresh) == [u.version for u in sorted(fresh.values(), key=lambda u: u.issued_at)]
    assert rig.stored() == rig.latest()
    rig.redis.close()


def test_timing_follows_expires_in_not_7200(clock: FakeClock) -> None:
    """A token said to live 30 s is refreshed after 24 s, not after two hours."""
    rig = Rig(clock, expires_in=30)
    assert rig.step() == pytest.approx(24)
    clock.advance(24)
    rig.step()
    assert rig.fetcher.calls == 2
    rig.redis.close()


def test_republishes_without_fetching(rig: Rig) -> None:
    """The held token is re-published every republish interval; upstream is not asked again."""
    rig.run_until(T0 + 600)
    assert rig.fetcher.calls == 1
    assert len(rig.published) == 10
    assert {u.version for u in rig.published} == {rig.published[0].version}
    assert set(rig.delays) == {rig.timing.republish_interval_s}


def test_next_refresh_replaces_before_expiry(rig: Rig) -> None:
    """At expires_at - 300 s a new version is fetched, stored and published."""
    rig.run_until(T0 + 6900)
    assert rig.fetcher.calls == 1
    rig.step()
    assert rig.fetcher.calls == 2
    first, second = rig.published[0], rig.published[-1]
    assert second.version > first.version
    assert second.value != first.value
    assert first.is_valid_at(rig.clock())
    assert rig.stored() == second


# ------------------------------------------------------------------ adopting from Redis
def test_restart_adopts_valid_token_without_fetching(rig: Rig) -> None:
    """A token already in Redis with life left is adopted and published with zero fetches."""
    existing = rig.other_producer_writes(value="EXISTING-TOKEN-0123456789", lifetime_s=7200)
    rig.clock.advance(1000)
    rig.step()
    assert rig.fetcher.calls == 0
    assert rig.published == [existing]
    assert rig.refresher.held == existing
    assert rig.refresher.stats.adopted == 1
    rig.run_until(T0 + 6900)
    assert rig.fetcher.calls == 0
    rig.step()
    assert rig.fetcher.calls == 1
    assert rig.latest() is not None
    assert rig.latest().version > existing.version  # type: ignore[union-attr]


def test_restart_with_token_near_expiry_fetches_at_once(rig: Rig) -> None:
    """A stored token already inside its refresh margin is replaced on the first step."""
    existing = rig.other_producer_writes(value="OLD-TOKEN-0123456789", lifetime_s=7200)
    rig.clock.advance(7000)
    rig.step()
    assert rig.fetcher.calls == 1
    assert rig.latest() is not None
    assert rig.latest().version > existing.version  # type: ignore[union-attr]


def test_expired_token_in_redis_is_not_adopted(rig: Rig) -> None:
    """A stored token that has expired (by the producer's clock) is replaced, never published."""
    existing = rig.other_producer_writes(value="DEAD-TOKEN-0123456789", lifetime_s=60)
    rig.clock.advance(61)
    rig.step()
    assert existing not in rig.published
    assert rig.fetcher.calls == 1


def test_override_is_adopted_and_kept_until_near_its_expiry(rig: Rig) -> None:
    """A manual override in Redis is adopted, re-published, and only replaced near its expiry."""
    rig.step()
    rig.clock.advance(100)
    override = rig.other_producer_writes(
        value="OVERRIDE-TOKEN-0123456789", lifetime_s=1000, source=TokenSource.OVERRIDE
    )
    override_refresh_at = override.expires_at - min(300, 1000 * 0.2)
    rig.run_until(override_refresh_at)
    assert rig.refresher.held == override
    assert rig.fetcher.calls == 1
    assert override in rig.published
    assert rig.clock() == pytest.approx(override_refresh_at)
    rig.step()
    assert rig.fetcher.calls == 2
    assert rig.latest() is not None
    assert rig.latest().version > override.version  # type: ignore[union-attr]
    assert rig.stored() == rig.latest()


def test_an_override_issued_by_a_clock_8_hours_fast_is_held_for_its_life_from_now(
    rig: Rig,
) -> None:
    """`wxtoken set --expires-in 600` stamped by a clock 8 h fast (issue 18, item 3): before,
    the producer held it for 8 h 10 min and fetched nothing for 8 h; now it is held for its
    600 s from adoption and replaced before they end."""
    rig.step()
    rig.clock.advance(100)
    operator = TokenStore(fakeredis.FakeRedis(server=rig.server))
    fast_s = rig.clock() + 8 * 3600
    override = make_update(
        value="OVERRIDE-FROM-A-FAST-LAPTOP-01",
        version=operator.next_version(APP_ID, TokenKind.ACCESS_TOKEN, now_s=rig.clock()),
        issued_at=fast_s,
        lifetime_s=600,
        source=TokenSource.OVERRIDE,
        producer_id="ops:laptop",
    )
    assert operator.write(override).written
    adopted_s = rig.clock()
    rig.step()
    held = rig.refresher.held
    assert held is not None
    assert held.version == override.version
    assert (held.issued_at, held.expires_at) == (adopted_s, adopted_s + 600)
    rig.run_until(adopted_s + 600 - 120)  # the refresh margin of a 600 s life
    rig.step()
    assert rig.fetcher.calls == 2
    assert rig.latest() is not None
    assert rig.latest().version > override.version  # type: ignore[union-attr]


def test_newer_version_during_refresh_wins(rig: Rig) -> None:
    """A newer version stored by another producer while we fetch wins; ours is refused."""
    rig.step()
    rig.clock.advance(6900)
    theirs: list[TokenUpdate] = []
    rig.fetcher.during_next_fetch = lambda: theirs.append(
        rig.other_producer_writes(value="THEIR-TOKEN-0123456789", lifetime_s=7200)
    )
    rig.fetcher.give(FetchedToken(value="OUR-LATE-TOKEN-0123456789", expires_in_s=7200))
    rig.step()
    assert rig.fetcher.calls == 2
    assert rig.stored() == theirs[0]
    assert rig.refresher.held == theirs[0]
    assert rig.refresher.stats.writes_refused == 1
    assert all(u.value != "OUR-LATE-TOKEN-0123456789" for u in rig.published)


def test_lost_snapshot_is_written_back_without_fetching(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    """When Redis loses the snapshot (flush, failover) the held token is written back, unfetched."""
    rig.step_and_wait()
    held = rig.published[0]
    rig.redis.delete(KeyLayout().token(APP_ID))
    assert rig.stored() is None
    rig.step()
    assert rig.stored() == held
    assert rig.fetcher.calls == 1
    assert {u.version for u in rig.published} == {held.version}
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any(APP_ID in r.getMessage() for r in warnings)


def test_corrupt_snapshot_is_replaced(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    """Garbage under the token key is reported and overwritten by the next fetched token."""
    rig.redis.set("wxtoken:token:wxapp1:access_token", b"{garbage")
    rig.step()
    assert rig.fetcher.calls == 1
    assert rig.stored() == rig.published[0]
    assert "invalid" in caplog.text


# ------------------------------------------------------------------ upstream failures
def test_transient_errors_back_off_growing_capped_and_recover(clock: FakeClock) -> None:
    """While a valid token is held, transient failures retry after 1, 2, 4 ... s capped at 60 s,
    then the new token is published."""
    rig = Rig(clock, rand=lambda: 1.0, timing=QUIET)
    rig.step()
    clock.advance(6900)  # the refresh point: 300 s left
    rig.fetcher.give(*[TRANSIENT] * 8)
    for _ in range(8):
        rig.step_and_wait()
    assert rig.delays[1:] == [1, 2, 4, 8, 16, 32, 60, 60]
    assert len(rig.published) == 1
    assert rig.refresher.stats.fetch_failures == 8
    rig.step()
    assert rig.fetcher.calls == 10
    assert len(rig.published) == 2
    # A later failure starts again from the base delay.
    clock.advance(6900)
    rig.fetcher.give(TRANSIENT)
    assert rig.step() == 1
    rig.redis.close()


#: No re-publish in the way: a step's delay is the retry's.
QUIET = RefreshTiming(republish_interval_s=86_400)


def test_config_error_at_the_refresh_point_retries_before_the_token_expires(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """One 40164 with 12 s left is retried within them (after 6 s, not config_retry_s): the
    retry replaces the token before it expires, and subscribers hold a valid one throughout."""
    rig = Rig(clock, expires_in=60, timing=QUIET)
    rig.step()
    clock.advance(48)  # 20 % of 60 s left: the refresh point
    rig.fetcher.give(upstream_error(40164))
    assert rig.step() == pytest.approx(6.0)
    assert "within the 12.0 s the held token has left" in caplog.text
    rig.run_until(T0 + 200)  # checks the latest published token is valid at every step
    assert rig.fetcher.fetch_times[:3] == [T0, T0 + 48, T0 + 54]
    assert rig.published[-1].version > rig.published[0].version
    rig.redis.close()


def test_config_errors_halve_the_time_left_then_keep_the_slow_pace(clock: FakeClock) -> None:
    """Repeated configuration errors retry at half the time left (no busier than retry_base_s)
    up to the expiry, and every config_retry_s once nothing valid is held."""
    rig = Rig(clock, expires_in=60, timing=QUIET)
    rig.step()
    clock.advance(48)
    rig.fetcher.give(*[upstream_error(40164)] * 7)
    for _ in range(7):
        rig.step_and_wait()
    assert rig.delays[1:] == pytest.approx([6, 3, 1.5, 1, 0.5, 300, 300])
    expiry = rig.published[0].expires_at
    assert rig.fetcher.fetch_times[1:6] == pytest.approx([T0 + t for t in (48, 54, 57, 58.5, 59.5)])
    assert all(t < expiry for t in rig.fetcher.fetch_times[:6])
    rig.redis.close()


def test_a_quota_error_at_the_refresh_point_keeps_its_hard_backoff(clock: FakeClock) -> None:
    """45009 with 12 s left is not retried within them: a spent quota does not come back
    in seconds (an operator's quota clear, then SIGHUP, retries now)."""
    rig = Rig(clock, expires_in=60, rand=lambda: 1.0, timing=QUIET)
    rig.step()
    clock.advance(48)
    rig.fetcher.give(upstream_error(45009))
    assert rig.step() == rig.timing.quota_retry_base_s
    rig.redis.close()


def test_transient_errors_with_nothing_valid_retry_at_a_short_pace(clock: FakeClock) -> None:
    """Once the held token has expired, transient failures retry every expired_retry_s at most
    (not the grown backoff), and the first answer after upstream is back is fetched."""
    rig = Rig(clock, expires_in=60, rand=lambda: 1.0, timing=QUIET)
    rig.step()
    clock.advance(48)
    rig.fetcher.give(*[TRANSIENT] * 25)
    while rig.fetcher.queue:
        rig.step_and_wait()
    expiry = rig.published[0].expires_at
    after = [t for t in rig.fetcher.fetch_times if t >= expiry]
    assert len(after) > 10
    gaps = [b - a for a, b in itertools.pairwise(after)]
    assert max(gaps) <= rig.timing.expired_retry_s
    back_at = clock()  # upstream answers from now on
    rig.step()
    assert rig.fetcher.fetch_times[-1] == back_at
    assert rig.published[-1].is_valid_at(clock())
    assert rig.published[-1].version > rig.published[0].version
    rig.redis.close()


def test_nothing_held_retries_transient_failures_at_a_short_pace(clock: FakeClock) -> None:
    """Before any token was fetched, transient failures back off to expired_retry_s at most."""
    rig = Rig(clock, rand=lambda: 1.0, timing=QUIET)
    rig.fetcher.give(*[TRANSIENT] * 9)
    for _ in range(9):
        rig.step_and_wait()
    assert rig.delays == [1, 2] + [rig.timing.expired_retry_s] * 7
    rig.step()
    assert len(rig.published) == 1
    rig.redis.close()


def test_failures_past_expiry_never_publish_the_dead_token(clock: FakeClock) -> None:
    """If upstream stays down past expiry, the expired token is not re-published."""
    rig = Rig(clock, expires_in=30)
    rig.step_and_wait()
    rig.fetcher.give(*[TRANSIENT] * 200)  # failing throughout: retried every few seconds
    while clock() < T0 + 200:
        rig.step_and_wait()  # checks that nothing published is expired
    assert rig.fetcher.calls > 5
    assert len({u.version for u in rig.published}) == 1
    assert all(u.issued_at == T0 for u in rig.published)
    rig.redis.close()


def test_config_error_waits_and_logs_one_error_line(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    """A refused secret waits about config_retry_s and logs one ERROR line with app and errcode."""
    rig.fetcher.give(upstream_error(40125))
    delay = rig.step()
    assert 0.9 * rig.timing.config_retry_s <= delay <= 1.1 * rig.timing.config_retry_s
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    line = errors[0].getMessage()
    assert APP_ID in line
    assert "40125" in line
    assert "\n" not in line
    assert rig.published == []
    assert rig.fetcher.calls == 1


@pytest.mark.parametrize("rand", [0.0, 1.0])
def test_config_retry_jitter_stays_near_config_retry(clock: FakeClock, rand: float) -> None:
    """The configuration retry delay stays within 10 % of config_retry_s."""
    rig = Rig(clock, rand=lambda: rand)
    rig.fetcher.give(upstream_error(40164))
    assert rig.step() == pytest.approx(rig.timing.config_retry_s * (0.9 + 0.2 * rand))
    rig.redis.close()


def test_config_error_with_valid_token_keeps_serving(rig: Rig) -> None:
    """A configuration error at refresh time keeps the still-valid token published."""
    rig.step()
    rig.clock.advance(6900)
    rig.fetcher.give(upstream_error(40013))
    rig.step()
    rig.clock.advance(60)
    rig.step()
    assert rig.fetcher.calls == 2
    assert rig.published[-1].version == rig.published[0].version


def test_quota_error_backs_off_hard(clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    """A quota error waits a minute, then doubles up to an hour, logging each as ERROR."""
    rig = Rig(clock, rand=lambda: 1.0)
    rig.fetcher.give(*[upstream_error(45009)] * 8)
    for _ in range(8):
        rig.step_and_wait()
    assert rig.delays == [60, 120, 240, 480, 960, 1920, 3600, 3600]
    assert rig.fetcher.calls == 8
    assert (
        sum(r.levelno >= logging.ERROR and "45009" in r.getMessage() for r in caplog.records) == 8
    )
    rig.step()
    assert len(rig.published) == 1
    rig.redis.close()


def test_quota_minimum_is_far_above_transient(clock: FakeClock) -> None:
    """Even the lowest jitter of a quota backoff waits longer than any transient retry's start."""
    rig = Rig(clock, rand=lambda: 0.0)
    rig.fetcher.give(upstream_error(45011))
    assert rig.step() >= rig.timing.quota_retry_base_s / 2
    rig.redis.close()


def test_same_token_from_stable_api_is_not_a_new_version(clock: FakeClock) -> None:
    """When the stable API hands back the held token, no new version goes out, its first
    expiry is kept, and it is asked for again at that expiry, not in a storm before it."""
    rig = Rig(clock, rand=lambda: 1.0)
    rig.fetcher.give(
        FetchedToken(value="STABLE-TOKEN-0123456789", expires_in_s=7200),
        FetchedToken(value="STABLE-TOKEN-0123456789", expires_in_s=300),
        FetchedToken(value="STABLE-TOKEN-0123456789", expires_in_s=299),
        FetchedToken(value="RENEWED-TOKEN-0123456789", expires_in_s=7200),
    )
    expiry_s = clock() + 7200
    rig.step()
    clock.advance(6900)
    rig.step()
    assert rig.fetcher.calls == 2
    while clock() < expiry_s:  # every step the refresher asks for until the expiry
        clock.advance(min(rig.step(), expiry_s - clock()))
    assert rig.fetcher.calls == 2
    assert {u.value for u in rig.published} == {"STABLE-TOKEN-0123456789"}
    assert {u.version for u in rig.published} == {rig.published[0].version}
    assert {u.expires_at for u in rig.published} == {expiry_s}
    rig.step()  # at the expiry: still the same one (upstream's clock lags)
    assert rig.fetcher.calls == 3
    clock.advance(UNCHANGED_MIN_RETRY_S)
    rig.step()
    assert rig.fetcher.calls == 4
    assert rig.latest() is not None
    assert rig.latest().value == "RENEWED-TOKEN-0123456789"  # type: ignore[union-attr]
    assert rig.published[-1].value == "RENEWED-TOKEN-0123456789"
    assert rig.stored() == rig.latest()
    rig.redis.close()


# ------------------------------------------------------------------ Redis away
def test_redis_down_still_fetches_and_publishes_then_writes(rig: Rig) -> None:
    """With Redis down the token is fetched and published; it is written once Redis is back."""
    rig.server.connected = False
    delay = rig.step()
    assert rig.fetcher.calls == 1
    assert len(rig.published) == 1
    assert delay <= rig.timing.store_retry_s
    assert rig.refresher.stats.store_failures >= 1
    for _ in range(3):
        rig.step_and_wait()
    assert rig.fetcher.calls == 1
    rig.server.connected = True
    assert rig.stored() is None
    rig.step()
    assert rig.stored() == rig.published[0]
    assert rig.fetcher.calls == 1


def test_redis_down_versions_still_rise(rig: Rig) -> None:
    """Versions allocated while Redis is down still rise above the earlier stored ones."""
    rig.step()
    first = rig.published[0]
    rig.clock.advance(6900)
    rig.server.connected = False
    rig.step()
    second = rig.latest()
    assert second is not None
    assert second.version > first.version
    rig.server.connected = True
    rig.clock.advance(rig.timing.store_retry_s)  # Redis is probed again this often
    rig.step()
    assert rig.stored() == second


def test_redis_logs_once_per_outage(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    """An outage logs one warning however many steps it lasts, and one line when it ends."""
    caplog.set_level(logging.INFO)
    rig.server.connected = False
    for _ in range(5):
        rig.step_and_wait()
    unreachable = [r for r in caplog.records if "Redis unreachable" in r.getMessage()]
    assert len(unreachable) == 1
    rig.server.connected = True
    rig.step()
    assert sum("reachable again" in r.getMessage() for r in caplog.records) == 1


# ------------------------------------------------------------------ secrets
def test_secret_and_token_never_logged(clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    """Through failures and success of the real classic client, DEBUG logs hold no secret."""
    caplog.set_level(logging.DEBUG)
    token = "REAL-LOOKING-TOKEN-" + "q" * 60
    app = AppConfig(app_id=APP_ID, secret=SecretStr(SECRET), token_api=TokenApi.CLASSIC)
    url = "https://api.weixin.qq.com/cgi-bin/token"
    with responses.RequestsMock(assert_all_requests_are_fired=True) as mock:
        mock.add(
            responses.GET,
            url,
            body=requests.exceptions.ConnectionError(
                f"Max retries exceeded with url: {url}?secret={SECRET}"
            ),
        )
        mock.add(responses.GET, url, json={"errcode": 40125, "errmsg": "invalid appsecret"})
        mock.add(responses.GET, url, json={"errcode": 45011, "errmsg": "minute limit"})
        mock.add(responses.GET, url, json={"access_token": token, "expires_in": 7200})
        rig = Rig(clock, fetcher=WeChatClient("https://api.weixin.qq.com"), app=app)
        for _ in range(4):
            rig.step_and_wait()
    assert rig.published[0].value == token
    assert SECRET not in caplog.text
    assert token not in caplog.text
    assert caplog.records
    rig.redis.close()


def test_a_refresh_request_retries_a_failed_fetch_now_at_most_every_ten_seconds(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """With nothing held after a configuration error, a refresh request (`wxtoken refresh`:
    the fingerprint of nothing) makes the next step fetch instead of waiting ~300 s; a
    flood of requests cuts the wait at most every RETRY_ON_REQUEST_MIN_S."""
    caplog.set_level(logging.INFO)
    rig = Rig(clock, timing=QUIET)
    rig.fetcher.give(*[upstream_error(40164)] * 3)
    assert rig.step() > 250

    def ask() -> None:
        rig.refresher.request_refresh(
            RefreshRequest.for_token(APP_ID, "", requester="ops:tester@host", now_s=clock())
        )

    clock.advance(1)
    ask()
    rig.step()
    assert rig.fetcher.calls == 2
    assert "retrying its failed access_token fetch now (a refresh request)" in caplog.text
    clock.advance(1)
    ask()
    rig.step()
    assert rig.fetcher.calls == 2  # within 10 s of the last cut: the backoff stands
    clock.advance(RETRY_ON_REQUEST_MIN_S)
    ask()
    rig.step()
    assert rig.fetcher.calls == 3
    rig.redis.close()
