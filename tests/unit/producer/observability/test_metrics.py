"""Metrics: the TokenClient collector, the producer's collector and upstream meter, and
the producer's status port. No label or value ever carries a token or a secret."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import cast

import fakeredis
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from consumer_lib import ClientSettings, InvalidUpdate, TokenClient
from consumer_lib._client.stats import REASONS, rejection_reason
from consumer_lib.metrics import TokenClientCollector
from consumer_lib.testing import StubTransport
from consumer_lib.wire.keys import KeyLayout
from consumer_lib.wire.kinds import TokenKind
from producer.apps import AppConfig, TokenApi
from producer.limits.budget import RefreshBudget
from producer.observability.metrics import ProducerCollector, ProducerView, is_healthy, is_ready
from producer.observability.status_server import StatusServer
from producer.refresh.refresher import RefresherStats
from producer.store.tokens import TokenStore
from producer.upstream.errcodes import FailureKind
from producer.upstream.meter import MeteredFetcher
from producer.upstream.wechat import FetchedToken, UpstreamError
from tests.conftest import FakeClock
from tests.unit._helpers import make_update

TOKEN = "SECRET-TOKEN-" + "q" * 40
APP_SECRET = "app-secret-never-shown"


def _samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(registry).decode()
    assert TOKEN not in text
    assert APP_SECRET not in text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@pytest.fixture
def stub(clock: FakeClock) -> StubTransport:
    return StubTransport(connected=False, clock=clock)  # no broker: as a real one unreachable


@pytest.fixture
def client(clock: FakeClock, stub: StubTransport) -> Iterator[TokenClient]:
    redis_client = fakeredis.FakeRedis()
    TokenStore(redis_client).write(make_update(app_id="wxapp1", value=TOKEN, version=5))
    settings = ClientSettings(
        insecure_accept_unsigned=True, amqp_url="amqp://guest:guest@127.0.0.1:1/%2F"
    )
    made = TokenClient(settings, redis_client=redis_client, clock=clock, transport=stub)
    yield made
    made.close()


def test_client_collector_reports_held_tokens_and_outcomes(
    client: TokenClient, clock: FakeClock, stub: StubTransport
) -> None:
    """Seconds left and version per app, updates by outcome, reachability; no token."""
    client.refresh_from_snapshot()
    stub.push_raw(b"garbage")
    clock.advance(200)
    registry = CollectorRegistry()
    registry.register(TokenClientCollector(client, clock=clock))
    samples = _samples(registry)
    labels = (("app_id", "wxapp1"), ("kind", "access_token"))
    assert samples[("wxtoken_client_token_seconds_left", labels)] == 7000
    assert samples[("wxtoken_client_token_version", labels)] == 5
    assert samples[("wxtoken_client_updates_total", (("outcome", "accepted"),))] == 1
    assert samples[("wxtoken_client_updates_total", (("outcome", "invalid"),))] == 1
    assert samples[("wxtoken_client_rejected_total", (("reason", "malformed"),))] == 1
    assert samples[("wxtoken_client_rejected_total", (("reason", "bad_signature"),))] == 0
    assert samples[("wxtoken_client_broker_connected", ())] == 0
    assert samples[("wxtoken_client_redis_reachable", ())] == 1


class _PublicOnly:
    """A client seen through its public surface only: a private name is an error."""

    def __init__(self, client: TokenClient) -> None:
        self._wrapped = client

    def __getattr__(self, name: str) -> object:
        if name.startswith("_"):
            raise AttributeError(f"the collector read the private {name!r}")
        return getattr(self._wrapped, name)


def test_client_collector_reads_only_public_methods(client: TokenClient, clock: FakeClock) -> None:
    """Every metric of the collector comes from `TokenClient`'s public read-outs
    (`held()`, `stats`, ...), not from its private state."""
    client.refresh_from_snapshot()
    clock.advance(200)
    assert client.held() == {
        ("wxapp1", TokenKind.ACCESS_TOKEN): (client.get("wxapp1", timeout=0), 7000)
    }
    registry = CollectorRegistry()
    registry.register(TokenClientCollector(cast(TokenClient, _PublicOnly(client)), clock=clock))
    samples = _samples(registry)
    labels = (("app_id", "wxapp1"), ("kind", "access_token"))
    assert samples[("wxtoken_client_token_seconds_left", labels)] == 7000
    assert samples[("wxtoken_client_token_version", labels)] == 5


class Upstream:
    def __init__(self) -> None:
        self.failures: list[UpstreamError] = []

    def fetch(self, app: AppConfig, *, force_refresh: bool = False) -> FetchedToken:
        if self.failures:
            raise self.failures.pop(0)
        return FetchedToken(TOKEN, 7200)


def test_meter_counts_outcomes_with_bounded_errcodes(clock: FakeClock) -> None:
    """ok, config 40164, and an unknown errcode as `other`; latency observed per call."""
    app = AppConfig(app_id="wxapp1", secret=SecretStr(APP_SECRET))
    upstream = Upstream()
    upstream.failures = [
        UpstreamError("ip", kind=FailureKind.CONFIG, errcode=40164),
        UpstreamError("?", kind=FailureKind.TRANSIENT, errcode=987654),
        UpstreamError("timeout", kind=FailureKind.TRANSIENT),
    ]
    ticks = iter(range(100))
    meter = MeteredFetcher(upstream, monotonic=lambda: next(ticks) * 0.2)
    for _ in range(3):
        with pytest.raises(UpstreamError):
            meter.fetch(app)
    assert meter.fetch(app).value == TOKEN
    assert meter.outcomes() == {
        ("wxapp1", "config", "40164"): 1,
        ("wxapp1", "transient", "other"): 1,
        ("wxapp1", "transient", "none"): 1,
        ("wxapp1", "ok", "none"): 1,
    }
    histogram = meter.latency()["wxapp1"]
    assert sum(histogram.counts) == 4
    assert histogram.sum_s == pytest.approx(0.8)


def test_producer_collector(clock: FakeClock) -> None:
    """Tokens, stats, upstream calls and latency, budget, leadership and reachability."""
    app = AppConfig(app_id="wxapp1", secret=SecretStr(APP_SECRET), token_api=TokenApi.STABLE)
    upstream = Upstream()
    upstream.failures = [UpstreamError("ip", kind=FailureKind.CONFIG, errcode=61004)]
    meter = MeteredFetcher(upstream)
    with pytest.raises(UpstreamError):
        meter.fetch(app)
    meter.fetch(app)
    budget = RefreshBudget(fakeredis.FakeRedis(), KeyLayout(), clock=clock)
    budget.try_spend("wxapp1", TokenApi.STABLE)
    stats = RefresherStats(fetches=3, forced_refreshes=1, requests_received=4, requests_refuted=3)
    held = make_update(app_id="wxapp1", value=TOKEN, version=9)
    view = ProducerView(
        apps=lambda: [(app, TokenKind.ACCESS_TOKEN, held, stats)],
        is_leader=lambda: True,
        epoch=lambda: 7,
        broker_connected=lambda: True,
        redis_reachable=lambda: True,
        budget=budget,
        meter=meter,
        publishes=lambda: (11, 2),
        lease_acquisitions=lambda: 3,
        messages=lambda: (
            6,
            {
                ("refresh_request", "invalid"): 2,
                ("refresh_request", "over_rate"): 5,
                ("control", "expired"): 1,
            },
        ),
    )
    registry = CollectorRegistry()
    registry.register(ProducerCollector(view, clock=clock))
    samples = _samples(registry)
    app_label = (("app_id", "wxapp1"),)
    assert samples[("wxtoken_producer_token_version", (*app_label, ("kind", "access_token")))] == 9
    credential = (*app_label, ("kind", "access_token"))
    assert samples[("wxtoken_producer_fetches_total", credential)] == 3
    assert samples[("wxtoken_producer_forced_refreshes_total", credential)] == 1
    refuted = (*app_label, ("handling", "refuted"), ("kind", "access_token"))
    assert samples[("wxtoken_producer_refresh_requests_total", refuted)] == 3
    calls = (*app_label, ("errcode", "61004"), ("outcome", "config"))
    assert samples[("wxtoken_producer_upstream_calls_total", calls)] == 1
    assert samples[("wxtoken_producer_upstream_seconds_count", app_label)] == 2
    assert samples[("wxtoken_producer_budget_used", (("api", "stable"), *app_label))] == 1
    assert samples[("wxtoken_producer_budget_limit", (("api", "stable"), *app_label))] == 20
    assert samples[("wxtoken_producer_leader", ())] == 1
    assert samples[("wxtoken_producer_lease_epoch", ())] == 7
    assert samples[("wxtoken_producer_lease_acquisitions_total", ())] == 3
    assert samples[("wxtoken_producer_publishes_total", (("result", "confirmed"),))] == 11
    assert samples[("wxtoken_producer_publishes_total", (("result", "nacked"),))] == 2
    assert samples[("wxtoken_producer_messages_received_total", ())] == 6
    garbage = (("message", "refresh_request"), ("reason", "invalid"))
    assert samples[("wxtoken_producer_messages_rejected_total", garbage)] == 2
    flood = (("message", "refresh_request"), ("reason", "over_rate"))
    assert samples[("wxtoken_producer_messages_rejected_total", flood)] == 5
    late = (("message", "control"), ("reason", "expired"))
    assert samples[("wxtoken_producer_messages_rejected_total", late)] == 1
    assert is_ready(view) == (True, "leader")


def test_a_held_token_upstream_refuses_is_a_gauge_with_its_refresh_due_time() -> None:
    """While upstream refuses the held version and a budget holds its refresh back, the
    refused gauge is 1 with the due time; a newer version held is not refused."""
    app = AppConfig(app_id="wxapp1", secret=SecretStr(APP_SECRET))
    held = make_update(app_id="wxapp1", value=TOKEN, version=9)
    stats = RefresherStats(refused_version=9, refused_refresh_due_at_s=1_800_000_031.0)
    view = ProducerView(
        apps=lambda: [(app, TokenKind.ACCESS_TOKEN, held, stats)],
        is_leader=lambda: True,
        epoch=lambda: 1,
        broker_connected=lambda: True,
        redis_reachable=lambda: True,
    )
    registry = CollectorRegistry()
    registry.register(ProducerCollector(view))
    labels = {"app_id": "wxapp1", "kind": "access_token"}
    assert registry.get_sample_value("wxtoken_producer_token_refused", labels) == 1.0
    due = "wxtoken_producer_token_refused_refresh_due_timestamp_seconds"
    assert registry.get_sample_value(due, labels) == 1_800_000_031.0
    stats.refused_version = 8
    assert registry.get_sample_value("wxtoken_producer_token_refused", labels) == 0.0
    assert registry.get_sample_value(due, labels) is None


def test_readiness_of_a_standby() -> None:
    """A standby is ready while it follows Redis, not when Redis is away."""
    reachable = [True]
    view = ProducerView(
        apps=list,
        is_leader=lambda: False,
        epoch=lambda: None,
        broker_connected=lambda: False,
        redis_reachable=lambda: reachable[0],
    )
    assert is_ready(view)[0]
    reachable[0] = False
    assert is_ready(view) == (False, "not the leader and Redis unreachable")


def test_a_refused_broker_login_is_not_ready_and_a_metric() -> None:
    """While the broker refuses the producer's login, even the leader is not ready (the
    reason names the user and the variable) and a gauge says so."""
    refused: list[str | None] = ["the broker refused user 'wxtoken-producer' (...)"]
    view = ProducerView(
        apps=list,
        is_leader=lambda: True,
        epoch=lambda: 1,
        broker_connected=lambda: False,
        redis_reachable=lambda: True,
        broker_login_refused=lambda: refused[0],
    )
    assert is_ready(view) == (False, refused[0])
    registry = CollectorRegistry()
    registry.register(ProducerCollector(view))
    assert registry.get_sample_value("wxtoken_producer_broker_login_refused") == 1.0
    refused[0] = None
    assert is_ready(view) == (True, "leader")
    assert registry.get_sample_value("wxtoken_producer_broker_login_refused") == 0.0


def test_a_refused_redis_login_is_not_ready_and_a_metric() -> None:
    """While Redis refuses the lease's login the producer is not ready, saying why."""
    refused = "Redis refused the login of user 'wxtoken-producer' (...)"
    view = ProducerView(
        apps=list,
        is_leader=lambda: False,
        epoch=lambda: None,
        broker_connected=lambda: True,
        redis_reachable=lambda: False,
        redis_login_refused=lambda: refused,
    )
    assert is_ready(view) == (False, refused)
    registry = CollectorRegistry()
    registry.register(ProducerCollector(view))
    assert registry.get_sample_value("wxtoken_producer_redis_login_refused") == 1.0


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:  # noqa: S310 - a loopback URL
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_status_server_routes() -> None:
    """/healthz alive, /readyz 503 then 200 as readiness changes, /metrics, JSON 404."""
    ready = [False]
    server = StatusServer(
        "127.0.0.1",
        0,
        metrics=lambda: (b"wxtoken_up 1\n", "text/plain; version=0.0.4"),
        ready=lambda: (ready[0], "because"),
    ).start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        assert _get(base + "/healthz") == (200, b'{"status": "alive"}')
        status, body = _get(base + "/readyz")
        assert status == 503
        assert json.loads(body)["reason"] == "because"
        ready[0] = True
        assert _get(base + "/readyz")[0] == 200
        assert _get(base + "/metrics") == (200, b"wxtoken_up 1\n")
        status, body = _get(base + "/nope?x=1")
        assert status == 404
        assert json.loads(body)["error"] == "not_found"
    finally:
        server.close()


def test_healthz_follows_the_publisher_loop() -> None:
    """/healthz is 503 with the reason once the publisher's loop stopped turning, 200
    again when it turns; a producer without that probe is simply alive."""
    turning = [True]
    view = ProducerView(
        apps=list,
        is_leader=lambda: False,
        epoch=lambda: None,
        broker_connected=lambda: False,  # a broker outage alone is not unhealthy
        redis_reachable=lambda: True,
        publisher_healthy=lambda: turning[0],
    )
    server = StatusServer(
        "127.0.0.1",
        0,
        metrics=lambda: (b"", "text/plain"),
        ready=lambda: (True, "leader"),
        healthy=lambda: is_healthy(view),
    ).start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        assert _get(base + "/healthz") == (200, b'{"status": "alive"}')
        turning[0] = False
        status, body = _get(base + "/healthz")
        assert status == 503
        assert json.loads(body) == {
            "status": "unhealthy",
            "reason": "the publisher thread stopped or its loop stalled",
        }
        turning[0] = True
        assert _get(base + "/healthz")[0] == 200
    finally:
        server.close()
    bare = ProducerView(
        apps=list,
        is_leader=lambda: False,
        epoch=lambda: None,
        broker_connected=lambda: False,
        redis_reachable=lambda: True,
    )
    assert is_healthy(bare) == (True, "alive")


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ("published by untrusted user 'mallory'", "untrusted_publisher"),
        ("invalid update: unsigned, and only signed ones are accepted", "unsigned"),
        ("invalid update: signed by unknown key 0123456789abcdef", "unknown_key"),
        ("invalid update: bad signature (key 0123456789abcdef)", "bad_signature"),
        ("update of 70000 bytes exceeds 65536", "oversize"),
        ("invalid update: value: String should have at most 512 characters", "malformed"),
        ("something new", "malformed"),
    ],
)
def test_rejection_reasons_are_a_fixed_set(message: str, reason: str) -> None:
    """Every rejection maps to one of a few words, never to text from the input."""
    assert rejection_reason(InvalidUpdate(message)) == reason
    assert reason in REASONS
