"""`TicketBudget` on fakeredis with a fake clock: WeCom's hourly ticket limits, fleet-wide."""

from __future__ import annotations

import fakeredis
import pytest
from pydantic import SecretStr

from consumer_lib import Platform, TokenKind
from consumer_lib.wire.keys import KeyLayout
from producer.apps import AppConfig, TokenApi
from producer.limits.ticket_budget import TicketBudget
from tests.conftest import FakeClock
from tests.unit._helpers import unreachable_redis

KEYS = KeyLayout("wxunit-tb")
CORP, AGENT_T = TokenKind.CORP_JSAPI_TICKET, TokenKind.AGENT_CONFIG_TICKET


def agent(agent_id: str) -> AppConfig:
    return AppConfig(
        app_id=f"agent{agent_id}",
        secret=SecretStr(f"secret-{agent_id}"),
        platform=Platform.WECOM,
        token_api=TokenApi.WECOM,
        corp_id="ww_corp",
        agent_id=agent_id,
        tickets=(CORP, AGENT_T),
    )


A, B = agent("1000002"), agent("1000003")


@pytest.fixture
def server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


def budget(server: fakeredis.FakeServer, clock: FakeClock, **limits: int) -> TicketBudget:
    return TicketBudget(fakeredis.FakeRedis(server=server), KEYS, clock=clock, **limits)


def test_agent_limit_is_per_agent_and_kind(server: fakeredis.FakeServer, clock: FakeClock) -> None:
    """An agent's agent-ticket calls stop at its hourly limit; its other kind and the other
    agent are unaffected."""
    tb = budget(server, clock, agent_per_hour=3)
    assert all(tb.try_spend(A, AGENT_T).allowed for _ in range(3))
    refused = tb.try_spend(A, AGENT_T)
    assert not refused.allowed
    assert "limit of 3" in refused.reason
    assert refused.retry_at_s == clock.now_s + 3600
    assert tb.try_spend(A, CORP).allowed
    assert tb.try_spend(B, AGENT_T).allowed


def test_corp_limit_spans_the_corps_agents(server: fakeredis.FakeServer, clock: FakeClock) -> None:
    """Corp-ticket calls of every agent of a corp count against one corp limit."""
    tb = budget(server, clock, corp_per_hour=2)
    assert tb.try_spend(A, CORP).allowed
    assert tb.try_spend(B, CORP).allowed
    refused = tb.try_spend(B, CORP)
    assert not refused.allowed
    assert "corp ww_corp" in refused.reason
    assert tb.try_spend(B, AGENT_T).allowed  # agent tickets are not corp tickets


def test_a_refused_call_spends_nothing(server: fakeredis.FakeServer, clock: FakeClock) -> None:
    """A corp ticket refused by the corp limit does not use up its agent's count."""
    tb = budget(server, clock, corp_per_hour=1, agent_per_hour=2)
    assert tb.try_spend(A, CORP).allowed
    assert not tb.try_spend(B, CORP).allowed
    clock.advance(3600)
    assert tb.try_spend(B, CORP).allowed
    assert not tb.try_spend(B, CORP).allowed  # corp full again, B spent just once
    clock.advance(3600)
    assert tb.try_spend(B, CORP).allowed


def test_window_rolls(server: fakeredis.FakeServer, clock: FakeClock) -> None:
    """Calls older than an hour no longer count."""
    tb = budget(server, clock, agent_per_hour=2)
    tb.try_spend(A, AGENT_T)
    clock.advance(1800)
    tb.try_spend(A, AGENT_T)
    assert not tb.try_spend(A, AGENT_T).allowed
    clock.advance(1800.001)
    assert tb.try_spend(A, AGENT_T).allowed


def test_two_producers_share_the_count(server: fakeredis.FakeServer, clock: FakeClock) -> None:
    """Two budgets on one Redis (two producers) share the limits."""
    first, second = budget(server, clock, agent_per_hour=2), budget(server, clock, agent_per_hour=2)
    assert first.try_spend(A, AGENT_T).allowed
    assert second.try_spend(A, AGENT_T).allowed
    assert not first.try_spend(A, AGENT_T).allowed


def test_redis_away_counts_in_memory(clock: FakeClock) -> None:
    """With Redis unreachable the limits still hold, counted in this process, and say so."""
    tb = TicketBudget(unreachable_redis(), KEYS, clock=clock, agent_per_hour=1)
    first = tb.try_spend(A, AGENT_T)
    assert first.allowed
    assert "counted in memory" in first.reason
    assert not tb.try_spend(A, AGENT_T).allowed


def test_only_wecom_tickets_are_budgeted(server: fakeredis.FakeServer, clock: FakeClock) -> None:
    """Asking about a WeChat ticket or an official account is a ValueError."""
    tb = budget(server, clock)
    official = AppConfig(app_id="wxa", secret=SecretStr("s"), tickets=(TokenKind.JSAPI_TICKET,))
    with pytest.raises(ValueError, match="not a WeCom ticket"):
        tb.try_spend(official, TokenKind.JSAPI_TICKET)
    with pytest.raises(ValueError, match="not a WeCom ticket"):
        tb.try_spend(A, TokenKind.ACCESS_TOKEN)
