"""Issue 18 item 4: requests that cost nothing are dropped before their sender is charged,
and the allowance is per (login, app, kind), so a flood cannot starve genuine reports."""

from __future__ import annotations

from pathlib import Path

import fakeredis
import pytest

from consumer_lib.amqp import Delivery
from consumer_lib.wire.kinds import TokenKind
from consumer_lib.wire.refresh_request import REQUEST_MESSAGE_TYPE, RefreshRequest
from consumer_lib.wire.update import TokenUpdate
from producer.apps import AppConfig, load_apps
from producer.limits.requesters import RequesterLimits
from producer.service import ProducerService
from producer.settings import ProducerSettings
from producer.upstream.wechat import FetchedToken
from tests.conftest import FakeClock

BASE_URL = "http://127.0.0.1:9"
SERVED = ("wxserved0000000001", "wxserved0000000002")
LOGIN = "wxtoken-consumer"


class Upstream:
    def __init__(self) -> None:
        self.calls = 0

    def fetch(self, app: AppConfig, *, force_refresh: bool = False) -> FetchedToken:
        self.calls += 1
        return FetchedToken(value=f"TOKEN-{app.app_id}-{self.calls:04d}", expires_in_s=7200)


class Publisher:
    def publish(self, update: TokenUpdate) -> None:
        pass

    def start(self) -> Publisher:
        return self

    def close(self, timeout_s: float = 0) -> None:
        pass


@pytest.fixture
def service(tmp_path: Path, clock: FakeClock) -> ProducerService:
    """A leading producer holding a token of each served app, with the default allowance
    (1 request/s, burst 30) on a clock that does not move."""
    apps_file = tmp_path / "apps.toml"
    apps_file.write_text("".join(f'[[apps]]\napp_id = "{a}"\nsecret = "s-{a}"\n' for a in SERVED))
    settings = ProducerSettings(
        apps_file=apps_file,
        wechat_base_url=BASE_URL,
        insecure_accept_unsigned=True,
        key_prefix="wxscreen",
    )
    svc = ProducerService(
        settings,
        load_apps(apps_file, wechat_base_url=BASE_URL),
        redis_client=fakeredis.FakeRedis(),
        fetcher=Upstream(),
        publisher=Publisher(),  # type: ignore[arg-type]
        clock=clock,
    )
    svc.requests._limits = RequesterLimits(rate_per_s=1.0, burst=30, clock=clock)
    svc.leadership.tick()
    for refresher in svc.refreshers:
        refresher.step()
    return svc


def held(svc: ProducerService, app_id: str) -> TokenUpdate:
    refresher = svc.refresher(app_id)
    assert refresher is not None
    assert refresher.held is not None
    return refresher.held


def deliver(svc: ProducerService, app_id: str, token: str, *, user_id: str = LOGIN) -> None:
    body = RefreshRequest.for_token(app_id, token, requester="client:x", now_s=1.8e9).encode()
    svc.requests._handle(
        Delivery(body=body, user_id=user_id, app_id="svc", type=REQUEST_MESSAGE_TYPE)
    )


def received(svc: ProducerService, app_id: str) -> int:
    refresher = svc.refresher(app_id)
    assert refresher is not None
    return refresher.stats.requests_received


def test_a_flood_about_unknown_apps_does_not_starve_genuine_reports(
    service: ProducerService,
) -> None:
    """5,000 requests about apps not served, from the login every service shares, with 10
    genuine reports of a served app's token among them: all 10 reach its refresher, and the
    flood is counted as ignored, not charged (before: the flood used up the allowance first
    and the genuine reports were dropped)."""
    token = held(service, SERVED[0]).value
    for n in range(10):
        for m in range(500):
            deliver(service, f"wxunknown{n:03d}{m:05d}", token)
        deliver(service, SERVED[0], token)
    assert received(service, SERVED[0]) == 10
    stats = service.requests.stats
    assert (stats.ignored, stats.dropped) == (5000, 0)


def test_unknown_kinds_and_tokens_never_held_cost_nothing(service: ProducerService) -> None:
    """A served app's ticket kind that is not served, or a token this producer never held,
    is ignored before charging; a recent (replaced) token still counts."""
    app_id = SERVED[0]
    first = held(service, app_id)
    for n in range(1000):
        deliver(service, app_id, f"never-issued-{n}")
        body = RefreshRequest.for_token(
            app_id, first.value, requester="client:x", now_s=1.8e9, kind=TokenKind.JSAPI_TICKET
        ).encode()
        service.requests._handle(
            Delivery(body=body, user_id=LOGIN, app_id="svc", type=REQUEST_MESSAGE_TYPE)
        )
    assert service.requests.stats.ignored == 2000
    refresher = service.refresher(app_id)
    assert refresher is not None
    assert refresher.knows_token(
        RefreshRequest.for_token(
            app_id, first.value, requester="client:x", now_s=1.8e9
        ).token_sha256
    )
    deliver(service, app_id, first.value)
    assert received(service, app_id) == 1


def test_the_allowance_is_per_login_app_and_kind(service: ProducerService) -> None:
    """A login's flood about one app's current token uses up that app's allowance only:
    its reports about another app, and another login's about the same app, still pass."""
    flooded, other = SERVED
    for _ in range(1000):
        deliver(service, flooded, held(service, flooded).value)
    assert received(service, flooded) == 30
    deliver(service, other, held(service, other).value)
    deliver(service, flooded, held(service, flooded).value, user_id="wxtoken-gateway")
    assert received(service, other) == 1
    assert received(service, flooded) == 31
