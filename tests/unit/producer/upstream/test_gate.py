"""Upstream politeness: the rate cap and the fleet-wide pause on 45011, alone and in use by
refreshers sharing one gate."""

from __future__ import annotations

import fakeredis
import pytest
from pydantic import SecretStr

from producer.apps import AppConfig
from producer.refresh.refresher import AppRefresher
from producer.store.tokens import TokenStore
from producer.upstream.gate import UpstreamGate
from producer.upstream.wechat import FetchedToken, UpstreamError
from tests.conftest import FakeClock
from tests.unit.producer.builders import build_refresher
from tests.unit.producer.refresh.test_refresher import upstream_error


def test_no_rate_means_every_call_may_go() -> None:
    """Without a rate cap the gate never defers a call."""
    gate = UpstreamGate()
    assert all(gate.reserve(1000.0) == 0.0 for _ in range(1000))


def test_the_rate_cap_spreads_calls() -> None:
    """At 10 calls a second: a burst of 10, then one call every 0.1 s."""
    gate = UpstreamGate(rate_per_s=10)
    assert [gate.reserve(1000.0) for _ in range(10)] == [0.0] * 10
    assert gate.reserve(1000.0) == pytest.approx(0.1)
    assert gate.reserve(1000.05) == pytest.approx(0.05)
    assert gate.reserve(1000.1) == 0.0
    assert gate.reserve(1000.1) == pytest.approx(0.1)
    # Idle time refills at most one second's worth.
    assert [gate.reserve(2000.0) for _ in range(11)].count(0.0) == 10


def test_45011_pauses_every_call_then_lets_them_go(caplog: pytest.LogCaptureFixture) -> None:
    """A per-minute limit pauses the whole gate for pause_s, logged once."""
    gate = UpstreamGate(pause_s=60)
    gate.answered(45011, 1000.0)
    gate.answered(45011, 1001.0)
    assert gate.reserve(1010.0) == pytest.approx(51.0)
    assert gate.reserve(1061.0) == 0.0
    assert gate.pauses == 2
    assert caplog.text.count("per-minute limit") == 1


@pytest.mark.parametrize("errcode", [None, -1, 40001, 45009, 40125])
def test_other_answers_do_not_pause(errcode: int | None) -> None:
    """Only 45011 pauses the fleet; a daily quota or a bad secret is one app's problem."""
    gate = UpstreamGate()
    gate.answered(errcode, 1000.0)
    assert gate.reserve(1000.0) == 0.0


def test_a_bad_rate_is_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        UpstreamGate(rate_per_s=0)


# ------------------------------------------------------------------ with refreshers
class Upstream:
    """Answers with a fresh token per app, or with queued errors; records calls."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.errors: list[UpstreamError] = []

    def fetch(self, app: AppConfig, *, force_refresh: bool = False) -> FetchedToken:
        self.calls.append(app.app_id)
        if self.errors:
            raise self.errors.pop(0)
        return FetchedToken(value=f"TOKEN-{app.app_id}-{len(self.calls):04d}", expires_in_s=7200)


def refreshers(
    clock: FakeClock, gate: UpstreamGate, upstream: Upstream, count: int
) -> list[AppRefresher]:
    store = TokenStore(fakeredis.FakeRedis())
    return [
        build_refresher(
            AppConfig(app_id=f"wxpolite{n}", secret=SecretStr("s3cret")),
            fetcher=upstream,
            store=store,
            clock=clock,
            upstream=gate,
        )
        for n in range(count)
    ]


def test_a_deferred_fetch_waits_without_counting_a_failure(clock: FakeClock) -> None:
    """Beyond the rate cap a refresher waits the gate's time; nothing is spent or counted."""
    gate = UpstreamGate(rate_per_s=2)
    upstream = Upstream()
    fleet = refreshers(clock, gate, upstream, 3)
    delays = [r.step() for r in fleet]
    assert upstream.calls == ["wxpolite0", "wxpolite1"]
    assert delays[2] == pytest.approx(0.5)
    assert fleet[2].stats.fetch_failures == 0
    clock.advance(delays[2])
    fleet[2].step()
    assert upstream.calls[-1] == "wxpolite2"
    assert fleet[2].held is not None


def test_45011_for_one_app_pauses_the_others(clock: FakeClock) -> None:
    """After one app meets the per-minute limit, no other app calls upstream until the
    pause is over; then they all fetch."""
    gate = UpstreamGate(pause_s=60)
    upstream = Upstream()
    upstream.errors.append(upstream_error(45011))
    fleet = refreshers(clock, gate, upstream, 4)
    for refresher in fleet:
        refresher.step()
    assert upstream.calls == ["wxpolite0"]
    clock.advance(30)
    for refresher in fleet[1:]:
        refresher.step()
    assert upstream.calls == ["wxpolite0"]
    clock.advance(31)
    for refresher in fleet[1:]:
        refresher.step()
    assert upstream.calls == ["wxpolite0", "wxpolite1", "wxpolite2", "wxpolite3"]


def test_http_and_redis_pools_fit_the_workers() -> None:
    """The HTTP pool holds a connection per worker (requests keeps 10 by default) and the
    Redis pool is bounded to what the producer's threads can use at once."""
    from consumer_lib.snapshot import connect_redis
    from producer.upstream.wechat import pooled_session

    session = pooled_session(24)
    adapter = session.get_adapter("http://127.0.0.1:9/cgi-bin/stable_token")
    assert adapter._pool_maxsize == 24  # type: ignore[attr-defined]
    client = connect_redis("redis://127.0.0.1:1/0", max_connections=30)
    assert client.connection_pool.max_connections == 30
    client.close()
    session.close()
