"""Refresh requests cannot drain the quota: checked upstream, spaced, capped, summed up.

A fake prober stands for getcallbackip (`ports.TokenProber`); fakeredis holds the
fleet-wide counts; the clock is moved by hand.
"""

from __future__ import annotations

import logging

import fakeredis
import pytest
from pydantic import SecretStr

from consumer_lib import TokenKind, TokenUpdate
from consumer_lib.wire.keys import KeyLayout
from consumer_lib.wire.refresh_request import RefreshRequest
from ops._format import status_records
from producer.apps import AppConfig, TokenApi
from producer.limits.budget import RefreshBudget
from producer.store.audit import AuditLog
from producer.store.tokens import TokenStore
from producer.store.upstream_failures import UpstreamErrors
from producer.upstream.errcodes import FailureKind
from producer.upstream.errors import UpstreamError
from producer.upstream.token_probe import TokenProbe
from producer.upstream.wechat import TokenCheck
from tests.conftest import FakeClock
from tests.unit._helpers import make_update
from tests.unit.producer.builders import build_refresher
from tests.unit.producer.fakes import RecordingFetcher

APP_ID = "wxapp1"
KEYS = KeyLayout("policy-test")


class FakeProber:
    """Says what `answer` holds (a TokenCheck, or None: raise as an unusable answer)."""

    def __init__(self, answer: TokenCheck | None = TokenCheck.ACCEPTED) -> None:
        self.answer = answer
        self.calls = 0

    def check_token(self, app: AppConfig, access_token: str) -> TokenCheck:
        self.calls += 1
        if self.answer is None:
            raise UpstreamError("errcode 40164 (IP not in the whitelist)", kind=FailureKind.CONFIG)
        return self.answer


class TickingClock(FakeClock):
    """A fake clock that moves 1 ms at each read."""

    def __call__(self) -> float:
        self.now_s += 0.001
        return self.now_s


class Rig:
    """One producer's refresher of one app; `peer()` makes another against the same Redis."""

    def __init__(
        self,
        clock: FakeClock,
        token_api: TokenApi = TokenApi.CLASSIC,
        *,
        answer: TokenCheck | None = TokenCheck.ACCEPTED,
        requested_per_day: int = 50,
        redis: fakeredis.FakeRedis | None = None,
    ) -> None:
        self.clock = clock
        self.redis = redis or fakeredis.FakeRedis()
        self.fetcher = RecordingFetcher()
        self.prober = FakeProber(answer)
        self.published: list[TokenUpdate] = []
        self.audit = AuditLog(self.redis, KEYS, clock=clock)
        self.budget = RefreshBudget(
            self.redis, KEYS, clock=clock, requested_per_day=requested_per_day
        )
        self.token_api = token_api
        self.failures = UpstreamErrors(self.redis, KEYS, clock=clock)
        self.refresher = build_refresher(
            AppConfig(app_id=APP_ID, secret=SecretStr("s3cret"), token_api=token_api),
            fetcher=self.fetcher,
            store=TokenStore(self.redis, KEYS),
            publish=self.published.append,
            budget=self.budget,
            clock=clock,
            audit=self.audit,
            probe=TokenProbe(self.prober, clock=clock),
            on_refused=self.failures.record_refused,
        )
        self.refresher.step()  # the first, scheduled fetch (or adopting a peer's token)
        self.initial_fetches = len(self.fetcher.forced)

    def report(self, token: str, times: int = 1, requester: str = "client:attacker") -> None:
        for _ in range(times):
            self.refresher.request_refresh(
                RefreshRequest.for_token(APP_ID, token, requester=requester, now_s=self.clock())
            )

    def flood_current(self, times: int = 10) -> None:
        """What the attacker does: report the token it just received, then step."""
        self.report(self.held.value, times)
        self.refresher.step()

    @property
    def held(self) -> TokenUpdate:
        assert self.refresher.held is not None
        return self.refresher.held

    @property
    def request_fetches(self) -> int:
        return len(self.fetcher.forced) - self.initial_fetches

    def entries(self, event: str) -> list[str]:
        return [e.reason or "" for e in self.audit.read(APP_ID, limit=1000) if e.event == event]


# ------------------------------------------------------------------ check before refresh
@pytest.mark.parametrize("token_api", [TokenApi.CLASSIC, TokenApi.STABLE])
def test_a_report_of_a_token_upstream_accepts_refreshes_nothing(
    clock: FakeClock, token_api: TokenApi
) -> None:
    """Upstream accepts the reported token: re-published, counted as refuted, no fetch."""
    rig = Rig(clock, token_api)
    clock.advance(5)
    before = len(rig.published)
    rig.flood_current(200)
    assert rig.request_fetches == 0
    assert rig.published[before:] == [rig.held]
    assert rig.refresher.stats.requests_refuted == 200
    assert rig.prober.calls == 1
    (entry,) = rig.entries("refresh_request")
    assert "200 refuted upstream" in entry


def test_a_wecom_report_is_checked_too(clock: FakeClock) -> None:
    """WeCom tokens are checked before a request-caused refresh like WeChat's."""
    redis = fakeredis.FakeRedis()
    fetcher, prober = RecordingFetcher(), FakeProber(TokenCheck.ACCEPTED)
    app = AppConfig(
        app_id="hr",
        secret=SecretStr("s3cret"),
        platform="wecom",
        token_api=TokenApi.WECOM,
        corp_id="ww_corp",
        agent_id="1000002",
    )
    refresher = build_refresher(
        app,
        fetcher=fetcher,
        store=TokenStore(redis, KEYS),
        budget=RefreshBudget(redis, KEYS, clock=clock),
        clock=clock,
        probe=TokenProbe(prober, clock=clock),
    )
    refresher.step()
    assert refresher.held is not None
    refresher.request_refresh(
        RefreshRequest.for_token("hr", refresher.held.value, requester="c", now_s=clock())
    )
    refresher.step()
    assert (len(fetcher.forced), prober.calls, refresher.stats.requests_refuted) == (1, 1, 1)


def test_a_flood_costs_one_probe_a_minute(clock: FakeClock) -> None:
    """10 reports a second for 5 minutes: one probe per minute, no fetch at all."""
    rig = Rig(clock)
    for _ in range(300):
        rig.flood_current(10)
        clock.advance(1)
    assert rig.request_fetches == 0
    assert rig.prober.calls == 5
    assert rig.refresher.stats.requests_refuted == 3000


def test_a_refused_valid_token_logs_one_error_and_refreshes(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Upstream refuses a token that should live on: another fetcher (same secret) is at
    work. One ERROR line says so, and the token is refreshed at once."""
    rig = Rig(clock, answer=TokenCheck.REFUSED)
    rejected = rig.held
    with caplog.at_level(logging.WARNING):
        rig.flood_current(50)
    assert rig.request_fetches == 1
    assert rig.held.version > rejected.version
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "something else has refreshed this app" in errors[0].getMessage()
    assert rejected.value not in caplog.text


def test_the_error_line_is_written_once_per_token(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """With the cap spent, the refused token stays; its reports do not repeat the line."""
    rig = Rig(clock, answer=TokenCheck.REFUSED, requested_per_day=0)
    with caplog.at_level(logging.WARNING):
        for _ in range(30):
            rig.flood_current(5)
            clock.advance(1)
    assert rig.request_fetches == 0
    assert sum(r.levelno == logging.ERROR for r in caplog.records) == 1


def test_verified_refusals_skip_the_spacing(clock: FakeClock) -> None:
    """A refusal upstream confirmed refreshes again 10 s after the last one (classic)."""
    rig = Rig(clock, answer=TokenCheck.REFUSED)
    for _ in range(3):
        rig.flood_current(5)
        clock.advance(10)
    assert rig.request_fetches == 3


def test_unknown_verdicts_fall_back_to_spaced_refreshes(clock: FakeClock) -> None:
    """With no verdict (IP not whitelisted for the check), classic request-caused
    refreshes keep 60 s apart: a 5-minute flood costs at most 5 fetches."""
    rig = Rig(clock, answer=None)
    for _ in range(300):
        rig.flood_current(10)
        clock.advance(1)
    assert 1 <= rig.request_fetches <= 5
    assert rig.refresher.stats.requests_over_budget > 0


def test_stable_apps_keep_wechats_thirty_seconds(clock: FakeClock) -> None:
    """A stable app's request-caused (forced) refreshes keep 30 s apart."""
    rig = Rig(clock, TokenApi.STABLE, answer=None)
    for _ in range(120):
        rig.flood_current(5)
        clock.advance(1)
    assert 1 <= rig.request_fetches <= 4
    assert all(rig.fetcher.forced[1:])


@pytest.mark.parametrize("answer", [None, TokenCheck.REFUSED])
def test_a_stable_flood_gets_a_forced_refresh_every_half_minute_not_fewer(
    clock: FakeClock, answer: TokenCheck | None
) -> None:
    """The request count and WeChat's forced count never refuse each other in turn: a
    refresh each 31 s while reports keep coming (a regression: they used to lock step)."""
    clock = TickingClock(clock.now_s)  # each read 1 ms later, as real spends are
    rig = Rig(clock, TokenApi.STABLE, answer=answer)
    for _ in range(125):
        rig.flood_current(3)
        clock.advance(0.5)
    assert rig.request_fetches == 3  # at 0 s, 31 s, 62 s
    assert rig.budget.try_spend_requested(APP_ID, TokenApi.STABLE).used_today == 3


def test_the_daily_cap_leaves_the_schedule_its_quota(clock: FakeClock) -> None:
    """Verified refusals stop refreshing at the cap; the scheduled refresh still runs."""
    rig = Rig(clock, answer=TokenCheck.REFUSED, requested_per_day=3)
    for _ in range(10):
        rig.flood_current(5)
        clock.advance(61)
    assert rig.request_fetches == 3
    over = rig.entries("request_over_budget")
    assert over
    assert "daily limit of 3 request-caused refreshes reached" in over[0]
    fetches = len(rig.fetcher.forced)
    clock.advance(7200)
    rig.refresher.step()
    assert len(rig.fetcher.forced) == fetches + 1  # scheduled: not held back by the cap


def test_the_spacing_is_fleet_wide(clock: FakeClock) -> None:
    """Two producers (one after the other, as after a failover) share the spacing."""
    first = Rig(clock, answer=None)
    first.flood_current(3)
    assert first.request_fetches == 1
    clock.advance(20)
    second = Rig(clock, answer=None, redis=first.redis)
    second.flood_current(3)
    assert second.request_fetches == 0
    assert second.refresher.stats.requests_over_budget == 3


def test_a_ticket_fetch_refusal_is_not_held_by_the_request_budget(clock: FakeClock) -> None:
    """`refresh_refused` (the producer's own verified call) ignores the request cap."""
    rig = Rig(clock, answer=None, requested_per_day=0)
    rig.flood_current(3)
    assert rig.request_fetches == 0
    held = rig.held
    assert rig.refresher.refresh_refused(held.value) not in (None, held.value)
    assert rig.request_fetches == 1


# ------------------------------------------------------------------ the audit trail
def test_audit_entries_of_a_flood_are_summed_up_per_minute(clock: FakeClock) -> None:
    """Five minutes of 10 reports a second, random fingerprints included: about one
    refresh_request entry a minute, whose counts add up to every report."""
    rig = Rig(clock)
    for n in range(300):
        rig.report(f"random-token-{n}", 3)
        rig.flood_current(7)
        clock.advance(1)
    clock.advance(60)
    rig.refresher.step()
    entries = rig.entries("refresh_request")
    assert 5 <= len(entries) <= 7
    totals = [int(e.split(" report(s)")[0]) for e in entries]
    assert sum(totals) == 3000


def test_a_lone_request_is_audited_at_once(clock: FakeClock) -> None:
    """An operator's one `wxtoken refresh` shows in the history right away."""
    rig = Rig(clock)
    rig.report(rig.held.value, requester="ops:alice@host")
    rig.refresher.step()
    (entry,) = rig.entries("refresh_request")
    assert "from ops:alice@host" in entry


def test_over_budget_is_logged_once_a_minute(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A flood over budget writes one warning and one over-budget entry a minute."""
    rig = Rig(clock, answer=None, requested_per_day=0)
    with caplog.at_level(logging.WARNING):
        for _ in range(120):
            rig.flood_current(5)
            clock.advance(1)
    warnings = [r for r in caplog.records if "over budget" in r.getMessage()]
    assert 1 <= len(warnings) <= 2
    assert 1 <= len(rig.entries("request_over_budget")) <= 2
    assert rig.refresher.stats.requests_over_budget == 600


# ------------------------------------------------------------------ the budget itself
def test_requested_spends_are_idempotent(clock: FakeClock) -> None:
    """A replayed spend (same id: a retry after a lost reply) spends nothing more."""
    redis = fakeredis.FakeRedis()
    budget = RefreshBudget(
        redis, KEYS, clock=clock, new_spend_id=lambda: "same-id", requested_min_interval_s=0
    )
    first = budget.try_spend_requested(APP_ID, TokenApi.CLASSIC)
    again = budget.try_spend_requested(APP_ID, TokenApi.CLASSIC)
    assert (first.allowed, first.used_today) == (True, 1)
    assert (again.allowed, again.used_today) == (True, 1)


def test_requested_spends_do_not_touch_the_schedules_count(clock: FakeClock) -> None:
    """The request cap has keys of its own: WeChat's classic count is spent separately."""
    redis = fakeredis.FakeRedis()
    budget = RefreshBudget(redis, KEYS, clock=clock, requested_per_day=2)
    assert budget.try_spend_requested(APP_ID, TokenApi.CLASSIC, verified=True).allowed
    assert budget.try_spend_requested(APP_ID, TokenApi.CLASSIC, verified=True).allowed
    assert not budget.try_spend_requested(APP_ID, TokenApi.CLASSIC, verified=True).allowed
    assert budget.try_spend(APP_ID, TokenApi.CLASSIC).used_today == 1


def _status(rig: Rig) -> dict[str, object]:
    """The `wxtoken status` record of the app's access token, from what Redis holds."""
    [record] = status_records(
        {(APP_ID, TokenKind.ACCESS_TOKEN): rig.held},
        now_s=rig.clock(),
        failures=rig.failures.read_all(),
    )
    return record


def test_a_refused_token_held_back_shows_refused_and_is_refreshed_when_due(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Upstream refuses the held stable token 5 s after a forced refresh: the 31 s spacing
    holds the next one back. Status says "refused upstream, refresh due at ...", a gauge
    says so, the producer refreshes at that moment without another report, and every
    line about it names the token it is about."""
    clock = TickingClock(clock.now_s)
    rig = Rig(clock, TokenApi.STABLE, answer=TokenCheck.REFUSED)
    rig.flood_current(3)
    assert rig.request_fetches == 1
    assert _status(rig)["state"] == "ok"
    clock.advance(5)
    refused = rig.held
    with caplog.at_level(logging.INFO):
        rig.flood_current(3)
    assert rig.request_fetches == 1
    stats = rig.refresher.stats
    assert stats.refused_version == refused.version
    due_s = stats.refused_refresh_due_at_s
    assert due_s is not None
    assert clock() < due_s <= clock() + 31
    record = _status(rig)
    assert record["state"] == "refused"
    failure = record["upstream_error"]
    assert isinstance(failure, dict)
    assert failure["note"].startswith("refused upstream (0s ago), refresh due at ")
    for line in (r.getMessage() for r in caplog.records if APP_ID in r.getMessage()):
        assert refused.masked in line, line
    # No more reports: the next step is due at that moment, and refreshes then.
    assert rig.refresher.step() <= due_s - clock() + 0.01
    clock.now_s = due_s
    rig.refresher.step()
    assert rig.request_fetches == 2
    assert rig.held.version > refused.version
    assert _status(rig)["state"] == "ok"


def test_refuted_reports_are_logged_naming_the_token_they_were_about(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Reports refuted about one token and summed up for later are logged naming that
    token, not the one held when the summary is written."""
    rig = Rig(clock)
    rig.flood_current(1)  # refuted, audited at once
    clock.advance(1)
    first = rig.held
    rig.flood_current(2)  # refuted, waits for the minute's summary
    clock.advance(1)
    store = TokenStore(rig.redis, KEYS)
    newer = make_update(
        app_id=APP_ID,
        value="OVERRIDE-" + "z" * 40,
        version=store.next_version(APP_ID, TokenKind.ACCESS_TOKEN, now_s=clock()),
        issued_at=clock(),
    )
    assert store.write(newer).written  # an operator's override
    rig.refresher.step()  # adopted
    with caplog.at_level(logging.INFO):
        rig.flood_current(1)  # refuted, about the new token, within the minute
        second = rig.held
        assert second.version == newer.version
        clock.advance(60)
        rig.flood_current(1)  # the minute's summary
    refuted = [r.getMessage() for r in caplog.records if "refuted" in r.getMessage()]
    assert any(f"2 report(s) of {first.masked} v{first.version} refuted" in m for m in refuted)
    assert any(f"2 report(s) of {second.masked} v{second.version} refuted" in m for m in refuted)
