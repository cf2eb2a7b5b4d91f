"""Passive refresh in the refresher: coalescing reports, the budget, force_refresh."""

from __future__ import annotations

import fakeredis
import pytest
from pydantic import SecretStr

from consumer_lib import TokenUpdate
from consumer_lib.wire.keys import KeyLayout
from consumer_lib.wire.refresh_request import RefreshRequest
from producer.apps import AppConfig, TokenApi
from producer.limits.budget import RefreshBudget
from producer.store.tokens import TokenStore
from tests.conftest import FakeClock
from tests.unit.producer.builders import build_refresher
from tests.unit.producer.fakes import RecordingFetcher

APP_ID = "wxapp1"


class Rig:
    def __init__(self, clock: FakeClock, token_api: TokenApi, *, forced_per_day: int = 20):
        self.clock = clock
        self.redis = fakeredis.FakeRedis()
        keys = KeyLayout("req-test")
        self.fetcher = RecordingFetcher()
        self.published: list[TokenUpdate] = []
        self.refresher = build_refresher(
            AppConfig(app_id=APP_ID, secret=SecretStr("s3cret"), token_api=token_api),
            fetcher=self.fetcher,
            store=TokenStore(self.redis, keys),
            publish=self.published.append,
            budget=RefreshBudget(self.redis, keys, clock=clock, forced_per_day=forced_per_day),
            clock=clock,
        )
        self.refresher.step()  # the first, scheduled fetch

    def report(self, token: str, times: int = 1) -> None:
        for _ in range(times):
            self.refresher.request_refresh(
                RefreshRequest.for_token(APP_ID, token, requester="client:test", now_s=self.clock())
            )

    @property
    def held(self) -> TokenUpdate:
        assert self.refresher.held is not None
        return self.refresher.held


def test_many_reports_of_the_current_token_cause_one_forced_refresh(clock: FakeClock) -> None:
    """200 reports of the current stable token cost one upstream call, with force_refresh."""
    rig = Rig(clock, TokenApi.STABLE)
    rejected = rig.held
    rig.report(rejected.value, times=200)
    rig.refresher.step()
    rig.report(rejected.value, times=50)  # stragglers, arriving during and after the fetch
    clock.advance(2)
    rig.refresher.step()
    assert rig.fetcher.forced == [False, True]
    assert rig.held.version > rejected.version
    assert rig.published[-1] == rig.held
    assert rig.refresher.stats.forced_refreshes == 1
    assert rig.refresher.stats.requests_about_old_tokens == 50


def test_classic_tokens_refresh_without_force_refresh(clock: FakeClock) -> None:
    """A classic token is replaced by a plain fetch: the classic API has no force mode."""
    rig = Rig(clock, TokenApi.CLASSIC)
    rig.report(rig.held.value)
    rig.refresher.step()
    assert rig.fetcher.forced == [False, False]


def test_report_of_an_old_token_only_republishes(clock: FakeClock) -> None:
    """A report about a token already replaced re-publishes the current one, no fetch."""
    rig = Rig(clock, TokenApi.STABLE)
    published_before = len(rig.published)
    clock.advance(5)
    rig.report("TOKEN-that-was-replaced-long-ago")
    rig.refresher.step()
    assert rig.fetcher.forced == [False]
    assert rig.published[published_before:] == [rig.held]


def test_republish_on_requests_is_rate_limited(clock: FakeClock) -> None:
    """A storm of reports about old tokens re-publishes at most once a second."""
    rig = Rig(clock, TokenApi.STABLE)
    clock.advance(5)
    count_before = len(rig.published)
    for _ in range(10):
        rig.report("TOKEN-old")
        rig.refresher.step()
        clock.advance(0.1)
    assert len(rig.published) - count_before == 1


def test_over_budget_republishes_and_counts(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """With the day's forced refreshes spent, a report re-publishes and says why."""
    rig = Rig(clock, TokenApi.STABLE, forced_per_day=1)
    rig.report(rig.held.value)
    rig.refresher.step()
    clock.advance(60)
    current = rig.held
    rig.report(current.value)
    rig.refresher.step()
    assert rig.fetcher.forced == [False, True]
    assert rig.held == current
    assert rig.published[-1] == current
    assert rig.refresher.stats.requests_over_budget == 1
    assert "over budget" in caplog.text
    assert current.value not in caplog.text


def test_forced_refreshes_keep_thirty_seconds_apart(clock: FakeClock) -> None:
    """A second forced refresh within 30 s of the first is refused by the budget."""
    rig = Rig(clock, TokenApi.STABLE)
    rig.report(rig.held.value)
    rig.refresher.step()
    clock.advance(10)
    rig.report(rig.held.value)
    rig.refresher.step()
    assert rig.fetcher.forced == [False, True]
    clock.advance(25)
    rig.report(rig.held.value)
    rig.refresher.step()
    assert rig.fetcher.forced == [False, True, True]
