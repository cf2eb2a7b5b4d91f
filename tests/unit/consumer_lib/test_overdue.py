"""When a subscriber decides a pushed successor went missing (and reads Redis for it): a
held token in the last tenth of its life, at most 150 s, with nothing newer pushed."""

from __future__ import annotations

from consumer_lib._client.cache import TokenCache
from consumer_lib._client.offset import ClockOffset
from tests.conftest import FakeClock
from tests.unit._helpers import T0, make_update


def cache_at(clock: FakeClock) -> TokenCache:
    clock.now_s = T0 + 1
    return TokenCache(clock, ClockOffset())


def test_a_token_in_its_last_150_s_without_a_successor_is_overdue(clock: FakeClock) -> None:
    cache = cache_at(clock)
    cache.offer(make_update(version=1, lifetime_s=7200))
    assert not cache.any_overdue()
    clock.now_s = T0 + 7200 - 151
    assert not cache.any_overdue()
    clock.now_s = T0 + 7200 - 149
    assert cache.any_overdue()
    assert cache.any_overdue()  # stays overdue until something newer arrives
    cache.offer(make_update(version=2, issued_at=T0 + 7000, lifetime_s=7200))
    assert not cache.any_overdue()


def test_a_short_token_is_overdue_in_its_last_tenth(clock: FakeClock) -> None:
    cache = cache_at(clock)
    cache.offer(make_update(version=1, lifetime_s=100))
    clock.now_s = T0 + 89
    assert not cache.any_overdue()
    clock.now_s = T0 + 91
    assert cache.any_overdue()


def test_a_successor_pushed_in_time_is_never_overdue(clock: FakeClock) -> None:
    """Thousands of tokens replaced before their window: none counts, and the watch does
    not keep the replaced ones."""
    cache = cache_at(clock)
    for n in range(1000):
        cache.offer(make_update(app_id=f"wx{n:05d}", version=1, lifetime_s=7200))
    clock.now_s = T0 + 6000
    for n in range(1000):
        cache.offer(
            make_update(app_id=f"wx{n:05d}", version=2, issued_at=T0 + 6000, lifetime_s=7200)
        )
    clock.now_s = T0 + 7150
    assert not cache.any_overdue()
    assert cache._overdue.moments == 1000  # the replaced ones left when they came due
    clock.now_s = T0 + 6000 + 7200 - 100
    assert cache.any_overdue()


def test_a_token_dead_for_longer_than_its_life_stops_counting(clock: FakeClock) -> None:
    """An app no longer served: its token is overdue, then expired, then forgotten."""
    cache = cache_at(clock)
    cache.offer(make_update(version=1, lifetime_s=7200))
    clock.now_s = T0 + 7200 + 10
    assert cache.any_overdue()
    clock.now_s = T0 + 2 * 7200 + 1
    assert not cache.any_overdue()


def test_a_clock_offset_moves_the_window(clock: FakeClock) -> None:
    """With this host 60 s ahead of the producer, a token expires 60 s later here, and so
    does its window."""
    offset = ClockOffset()
    clock.now_s = T0 + 1
    cache = TokenCache(clock, offset)
    cache.offer(make_update(version=1, lifetime_s=7200))
    # received 60 s after it was sent (inside its signed life): an offset
    offset.sample(T0 + 1 - 60, T0 + 1, issued_at_s=T0 - 100, expires_at_s=T0 + 7200)
    assert offset.offset_s > 59
    clock.now_s = T0 + 7200 - 149
    assert not cache.any_overdue()
    clock.now_s = T0 + 7200 + 60 - 149
    assert cache.any_overdue()


def test_a_snapshot_deadline_sets_the_window(clock: FakeClock) -> None:
    cache = cache_at(clock)
    cache.offer(make_update(version=1, lifetime_s=7200), deadline_s=T0 + 1000)
    clock.now_s = T0 + 1000 - 149
    assert cache.any_overdue()


def test_a_forked_childs_cache_watches_what_it_inherited(clock: FakeClock) -> None:
    cache = cache_at(clock)
    cache.offer(make_update(version=1, lifetime_s=7200))
    child = cache.renewed()
    clock.now_s = T0 + 7200 - 149
    assert child.any_overdue()


def test_the_watch_stays_small_without_looks(clock: FakeClock) -> None:
    """A client whose transport never asks (a stub), taking update after update of one
    app: replaced moments are compacted away, and the answer stays right."""
    cache = cache_at(clock)
    for version in range(1, 5001):
        cache.offer(make_update(version=version, lifetime_s=7200))
    assert cache._overdue.moments <= 2 + 1024
    clock.now_s = T0 + 7200 - 149
    assert cache.any_overdue()
