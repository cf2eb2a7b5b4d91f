"""The gateway answers with the expiry `get_token()` uses, not its own clock's reading of
`expires_at` (issue 18, item 2): with the gateway's clock 300 s behind the producer's, it
used to answer 200 (token, /accesstoken, tickets, a jssdk-config signed with a dead
ticket) for 299 s after the real expiry, with `expires_in` 300 s too long, and stay ready.
A real `TokenClient` on the stub transport, the producer's send time in each message."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from consumer_lib import TokenKind
from consumer_lib.testing import stub_client
from ops.gateway import KeyRing, add_key
from ops.gateway._app import Gateway
from ops.gateway._ratelimit import RateLimiter
from ops.gateway._routes import build_app
from ops.gateway._tokens import TokenView
from tests.conftest import FakeClock
from tests.unit._helpers import T0, make_update

APP = "wxapp1"
BEHIND_S = 300.0
LIFETIME_S = 600.0
PAGE = "https://h5.example.com/pay"


class SkewedGateway:
    """A gateway whose clock (and its client's) reads `BEHIND_S` less than the producer's."""

    def __init__(self, tmp_path: Path) -> None:
        self.clock = FakeClock(T0 - BEHIND_S)  # the producer's clock reads T0
        self.tokens, self.stub = stub_client(clock=self.clock)
        path = tmp_path / "keys.json"
        self.key = add_key(path, "all", apps=["wx*"], scopes=["read"])
        known = [(APP, TokenKind.ACCESS_TOKEN), (APP, TokenKind.JSAPI_TICKET)]
        self.gateway = Gateway(
            client=self.tokens,
            view=TokenView(self.tokens, lambda: known),
            keys=KeyRing(path),
            clock=self.clock,
            limiter=RateLimiter(clock=self.clock),
        )
        self.http = TestClient(build_app(self.gateway, start_client=False))

    def push_from_producer(self, kind: TokenKind, value: str) -> None:
        """Issued and sent at T0 on the producer's clock, `LIFETIME_S` long."""
        update = make_update(
            app_id=APP, kind=kind, value=value, issued_at=T0, lifetime_s=LIFETIME_S
        )
        self.stub.push(update, sent_s=T0)

    def statuses(self) -> dict[str, int]:
        auth = {"Authorization": f"Bearer {self.key}"}
        paths = {
            "token": f"/v1/apps/{APP}/access_token",
            "accesstoken": f"/accesstoken?appid={APP}",
            "ticket": f"/v1/apps/{APP}/tickets/jsapi",
            "jssdk": f"/v1/apps/{APP}/jssdk-config?url={PAGE}",
            "readyz": "/readyz",
        }
        return {name: self.http.get(path, headers=auth).status_code for name, path in paths.items()}


@pytest.fixture
def skewed(tmp_path: Path) -> Iterator[SkewedGateway]:
    gateway = SkewedGateway(tmp_path)
    with gateway.http:
        yield gateway
    gateway.tokens.close()


def test_a_gateway_behind_the_producer_stops_answering_at_the_real_expiry(
    skewed: SkewedGateway,
) -> None:
    """`expires_in` counts to the real expiry; one second before it every route answers,
    at it none does (503) and the gateway is not ready."""
    skewed.push_from_producer(TokenKind.ACCESS_TOKEN, "TOKEN-" + "a" * 30)
    skewed.push_from_producer(TokenKind.JSAPI_TICKET, "TICKET-" + "t" * 30)
    real_expiry_here_s = T0 + LIFETIME_S - BEHIND_S
    auth = {"Authorization": f"Bearer {skewed.key}"}
    answer = skewed.http.get(f"/v1/apps/{APP}/access_token", headers=auth).json()
    assert answer["expires_in"] == pytest.approx(LIFETIME_S, abs=1)
    assert answer["expires_at"] == pytest.approx(real_expiry_here_s, abs=0.5)
    skewed.clock.now_s = real_expiry_here_s - 1
    assert set(skewed.statuses().values()) == {200}
    skewed.clock.now_s = real_expiry_here_s
    statuses = skewed.statuses()
    print(f"[gateway 300 s behind] at the real expiry: {statuses}")
    assert statuses == {
        "token": 503,
        "accesstoken": 503,
        "ticket": 503,
        "jssdk": 503,
        "readyz": 503,
    }
    assert skewed.tokens.held_until(APP) is None
