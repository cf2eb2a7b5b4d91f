"""`RefreshBudget` on fakeredis with a fake clock: WeChat's daily limits and spacing."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

import fakeredis
import pytest

from consumer_lib.wire.keys import KeyLayout
from producer.apps import TokenApi
from producer.limits.budget import (
    COUNT_TTL_S,
    RefreshBudget,
    budget_count_key,
    budget_day,
    budget_last_forced_key,
)
from tests.conftest import FakeClock
from tests.unit._helpers import T0, unreachable_redis

APP = "wxapp1"
KEYS = KeyLayout("wxunit")
#: T0 is 2027-01-15T08:00:00Z; the next UTC midnight is 16 hours later.
NEXT_MIDNIGHT = T0 + 16 * 3600


@pytest.fixture
def server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


@pytest.fixture
def client(server: fakeredis.FakeServer) -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis(server=server)


@pytest.fixture
def budget(client: fakeredis.FakeRedis, clock: FakeClock) -> RefreshBudget:
    return RefreshBudget(client, KEYS, clock=clock)


def spend_forced(budget: RefreshBudget, clock: FakeClock, times: int) -> None:
    """Spend `times` forced refreshes, 30 s apart, each allowed."""
    for _ in range(times):
        decision = budget.try_spend(APP, TokenApi.STABLE)
        assert decision.allowed, decision.reason
        clock.advance(30)


def test_twenty_forced_refreshes_a_day_then_refused(
    budget: RefreshBudget, clock: FakeClock
) -> None:
    """The 21st forced refresh of a UTC day is refused, naming the daily limit."""
    spend_forced(budget, clock, 20)
    decision = budget.try_spend(APP, TokenApi.STABLE)
    assert not decision.allowed
    assert "daily limit of 20" in decision.reason
    assert (decision.used_today, decision.limit) == (20, 20)


def test_allowed_decision_reports_the_count(budget: RefreshBudget) -> None:
    """An allowed spend says which one of the day it is."""
    decision = budget.try_spend(APP, TokenApi.STABLE)
    assert decision.allowed
    assert (decision.used_today, decision.limit) == (1, 20)
    assert decision.reason == "forced refresh 1 of 20 today"


def test_forced_refreshes_are_thirty_seconds_apart(budget: RefreshBudget, clock: FakeClock) -> None:
    """A forced refresh less than 30 s after the last is refused and not counted."""
    assert budget.try_spend(APP, TokenApi.STABLE).allowed
    clock.advance(29.9)
    refused = budget.try_spend(APP, TokenApi.STABLE)
    assert not refused.allowed
    assert "less than 30 s" in refused.reason
    assert refused.used_today == 1
    clock.advance(0.1)
    assert budget.try_spend(APP, TokenApi.STABLE).allowed


def test_a_new_utc_day_resets_the_count(budget: RefreshBudget, clock: FakeClock) -> None:
    """Spent out before midnight UTC, the budget is whole again just after it."""
    spend_forced(budget, clock, 20)
    clock.now_s = NEXT_MIDNIGHT - 1
    assert not budget.try_spend(APP, TokenApi.STABLE).allowed
    clock.now_s = NEXT_MIDNIGHT
    decision = budget.try_spend(APP, TokenApi.STABLE)
    assert decision.allowed
    assert decision.used_today == 1
    assert budget_day(NEXT_MIDNIGHT) == "20270116"


def test_apps_and_apis_have_separate_budgets(budget: RefreshBudget, clock: FakeClock) -> None:
    """Another app, or the classic API of the same app, is not limited by this one's spends."""
    spend_forced(budget, clock, 20)
    assert budget.try_spend("wxapp2", TokenApi.STABLE).allowed
    assert budget.try_spend(APP, TokenApi.CLASSIC).allowed


def test_classic_fetches_are_limited_to_2000_a_day_counting_recorded_ones(
    budget: RefreshBudget, client: fakeredis.FakeRedis, clock: FakeClock
) -> None:
    """Scheduled fetches recorded with `record_fetch` use up the same 2000 as requests."""
    client.set(budget_count_key(KEYS, APP, TokenApi.CLASSIC, budget_day(T0)), 1997)
    budget.record_fetch(APP, TokenApi.CLASSIC)
    first = budget.try_spend(APP, TokenApi.CLASSIC)
    assert first.allowed
    assert (first.used_today, first.limit) == (1999, 2000)
    budget.record_fetch(APP, TokenApi.CLASSIC)  # recorded even at the limit: it happened
    refused = budget.try_spend(APP, TokenApi.CLASSIC)
    assert not refused.allowed
    assert "daily limit of 2000 classic" in refused.reason
    assert refused.used_today == 2000


def test_classic_requests_need_no_spacing(budget: RefreshBudget) -> None:
    """Classic refreshes only count per day: two in the same second are both allowed."""
    assert budget.try_spend(APP, TokenApi.CLASSIC).allowed
    assert budget.try_spend(APP, TokenApi.CLASSIC).allowed


def test_recording_a_stable_fetch_costs_nothing(budget: RefreshBudget) -> None:
    """Normal-mode stable fetches do not use the forced budget."""
    for _ in range(30):
        budget.record_fetch(APP, TokenApi.STABLE)
    assert budget.try_spend(APP, TokenApi.STABLE).used_today == 1


def test_counters_expire_after_two_days(budget: RefreshBudget, client: fakeredis.FakeRedis) -> None:
    """Both keys get a TTL of about two days, so old days clean themselves up."""
    budget.try_spend(APP, TokenApi.STABLE)
    count_key = budget_count_key(KEYS, APP, TokenApi.STABLE, budget_day(T0))
    assert count_key == "wxunit:budget:wxapp1:stable:20270115"
    for key in (count_key, budget_last_forced_key(KEYS, APP, TokenApi.STABLE)):
        assert 0 < client.ttl(key) <= COUNT_TTL_S


def test_two_budgets_on_one_redis_share_the_count(
    server: fakeredis.FakeServer, clock: FakeClock
) -> None:
    """Two producers' budgets on the same Redis see each other's spends and spacing."""
    first = RefreshBudget(fakeredis.FakeRedis(server=server), KEYS, clock=clock)
    second = RefreshBudget(fakeredis.FakeRedis(server=server), KEYS, clock=clock)
    assert first.try_spend(APP, TokenApi.STABLE).allowed
    assert not second.try_spend(APP, TokenApi.STABLE).allowed  # within 30 s
    for _ in range(19):
        clock.advance(30)
        assert second.try_spend(APP, TokenApi.STABLE).allowed
    clock.advance(30)
    refused = first.try_spend(APP, TokenApi.STABLE)
    assert not refused.allowed
    assert refused.used_today == 20


def test_redis_down_falls_back_to_counting_in_memory(clock: FakeClock) -> None:
    """With Redis unreachable the limits hold in memory, and the reason says so."""
    budget = RefreshBudget(unreachable_redis(), KEYS, clock=clock)
    first = budget.try_spend(APP, TokenApi.STABLE)
    assert first.allowed
    assert "Redis unreachable, counted in memory" in first.reason
    assert not budget.try_spend(APP, TokenApi.STABLE).allowed  # spacing holds
    clock.advance(30)
    spend_forced(budget, clock, 19)
    refused = budget.try_spend(APP, TokenApi.STABLE)
    assert not refused.allowed
    assert refused.used_today == 20
    assert "daily limit" in refused.reason
    assert "Redis unreachable" in refused.reason


def test_memory_fallback_continues_from_redis_and_syncs_back(
    server: fakeredis.FakeServer,
    client: fakeredis.FakeRedis,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """During an outage the count goes on from Redis's; spends made then reach Redis later.
    The outage is one WARNING when it starts and one INFO when it ends."""
    caplog.set_level(logging.INFO, logger="producer.limits.budget")
    budget = RefreshBudget(client, KEYS, clock=clock)
    spend_forced(budget, clock, 5)
    server.connected = False
    offline = budget.try_spend(APP, TokenApi.STABLE)
    assert offline.allowed
    assert offline.used_today == 6
    assert "Redis unreachable" in offline.reason
    assert not budget.try_spend(APP, TokenApi.STABLE).allowed  # spacing holds, no new line
    server.connected = True
    clock.advance(30)
    assert budget.try_spend(APP, TokenApi.STABLE).used_today == 7
    said = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert [level for level, _ in said] == ["WARNING", "INFO"]
    assert said[0][1].startswith("Redis (refresh budget) unreachable: ConnectionError")
    assert said[0][1].endswith("; counting in memory")
    assert said[1][1].startswith("Redis (refresh budget) available again after")
    clock.advance(30)
    other = RefreshBudget(fakeredis.FakeRedis(server=server), KEYS, clock=clock)
    assert other.try_spend(APP, TokenApi.STABLE).used_today == 8


def test_a_garbled_counter_never_raises(budget: RefreshBudget, client: fakeredis.FakeRedis) -> None:
    """A counter Redis cannot increment makes the budget count in memory, not raise."""
    client.set(budget_count_key(KEYS, APP, TokenApi.CLASSIC, budget_day(T0)), "not a number")
    decision = budget.try_spend(APP, TokenApi.CLASSIC)
    assert decision.allowed
    assert "counted in memory" in decision.reason


def test_negative_limits_are_refused(client: fakeredis.FakeRedis) -> None:
    """A budget cannot be built with a negative limit."""
    with pytest.raises(ValueError, match="negative"):
        RefreshBudget(client, KEYS, forced_per_day=-1)


def test_concurrent_spends_across_budgets_allow_exactly_one(
    server: fakeredis.FakeServer, clock: FakeClock
) -> None:
    """200 simultaneous forced spends from 20 budgets on one Redis let exactly one through."""
    budgets = [
        RefreshBudget(fakeredis.FakeRedis(server=server), KEYS, clock=clock) for _ in range(20)
    ]
    with ThreadPoolExecutor(max_workers=20) as pool:
        decisions = list(
            pool.map(lambda i: budgets[i % 20].try_spend(APP, TokenApi.STABLE), range(200))
        )
    assert sum(d.allowed for d in decisions) == 1
    assert {d.used_today for d in decisions} == {1}


def test_a_replayed_spend_is_counted_once(client: fakeredis.FakeRedis, clock: FakeClock) -> None:
    """Two runs of the script with one spend id (redis-py's retry after a lost reply) spend
    once and give the same answer; a new id spends again."""
    ids = iter(["spend-1", "spend-1", "spend-2"])
    budget = RefreshBudget(client, KEYS, clock=clock, new_spend_id=lambda: next(ids))
    first = budget.try_spend(APP, TokenApi.CLASSIC)
    replay = budget.try_spend(APP, TokenApi.CLASSIC)
    assert first.allowed
    assert replay.used_today == first.used_today == 1
    assert budget.try_spend(APP, TokenApi.CLASSIC).used_today == 2
