"""The gateway's routes in-process (Starlette's TestClient), with a fake TokenClient."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from consumer_lib import ReportOutcome, StoreError, TokenKind, TokenUnavailable, TokenUpdate
from consumer_lib._client.cache import TokenCache
from consumer_lib.wire.refresh_request import RefreshRequest
from ops.gateway import KeyRing, add_key
from ops.gateway._app import Gateway, ReportBody
from ops.gateway._ratelimit import RateLimiter
from ops.gateway._routes import build_app
from ops.gateway._tokens import TokenView
from producer.store.upstream_failures import UpstreamFailure
from tests.conftest import FakeClock
from tests.unit._helpers import make_update

APP = "wxapp1"


class FakeClient:
    """What the gateway uses of TokenClient, with no thread and no broker; what it holds
    is in a real `TokenCache` (expiry as the client counts it)."""

    def __init__(self, clock: FakeClock) -> None:
        self.cache = TokenCache(clock)
        self.callbacks: list[Callable[[TokenUpdate], None]] = []
        self.reports: list[tuple[str, str, str | None]] = []
        self.requesters: list[str | None] = []
        self.connected = True
        self.broker_login_refused: str | None = None
        self.store_login_refused: str | None = None
        self.unavailable = "no access_token for app 'wxapp2' and none arrived within 0 s"
        self.outcome = ReportOutcome.SENT

    def on_update(self, callback: Callable[[TokenUpdate], None]) -> None:
        self.callbacks.append(callback)

    def push(self, update: TokenUpdate) -> None:
        self.cache.offer(update)
        for callback in self.callbacks:
            callback(update)

    def resolve_app_id(self, app_id: str) -> str:
        return (
            app_id  # no platform credentials here (tests/unit/consumer_lib/test_platform_app_ids)
        )

    def held_until(self, app_id: str, kind: TokenKind) -> tuple[TokenUpdate, float] | None:
        return self.cache.valid(app_id, kind)

    def valid_count(self) -> int:
        return self.cache.valid_count()

    def get(self, app_id: str, timeout: float = 5.0, *, kind: TokenKind) -> TokenUpdate:
        raise TokenUnavailable(self.unavailable)

    def held_body(self, app_id: str, kind: TokenKind) -> tuple[TokenUpdate, bytes] | None:
        return None  # the stream's tests (test_gateway_stream) carry bytes

    def report_invalid_outcome(
        self,
        app_id: str,
        token: str,
        *,
        kind: TokenKind,
        reason: str | None = None,
        requester: str | None = None,
    ) -> ReportOutcome:
        self.reports.append((app_id, token, reason))
        self.requesters.append(requester)
        return self.outcome


class Harness:
    def __init__(self, tmp_path: Path, clock: FakeClock, **gateway_kw: Any) -> None:
        self.clock = clock
        self.client = FakeClient(clock)
        self.known: list[tuple[str, TokenKind]] = [(APP, TokenKind.ACCESS_TOKEN)]
        self.store_down = False
        path = tmp_path / "keys.json"
        self.keys = {
            "all": add_key(path, "all", apps=["wx*"], scopes=["read", "report", "override"]),
            "reader": add_key(path, "reader", apps=[APP], scopes=["read"]),
        }
        self.failures: dict[tuple[str, TokenKind], UpstreamFailure] = {}
        self.view = TokenView(
            self.client,  # type: ignore[arg-type]
            self._known,
            clock=clock,
            last_failure=lambda app_id, kind: self.failures.get((app_id, kind)),
        )
        self.gateway = Gateway(
            client=self.client,  # type: ignore[arg-type]
            view=self.view,
            keys=KeyRing(path),
            clock=clock,
            limiter=RateLimiter(clock=clock),
            **gateway_kw,
        )
        self.http = TestClient(build_app(self.gateway, start_client=False))

    def _known(self) -> list[tuple[str, TokenKind]]:
        if self.store_down:
            raise StoreError("connection refused")
        return self.known

    def auth(self, role: str = "all") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[role]}"}


@pytest.fixture
def h(tmp_path: Path, clock: FakeClock) -> Iterator[Harness]:
    harness = Harness(tmp_path, clock)
    with harness.http:
        yield harness


def test_read_from_memory(h: Harness) -> None:
    """A pushed token is served with seconds left, expiry and version; no store read."""
    h.client.push(make_update(app_id=APP, version=7, value="TOKEN-" + "a" * 30))
    h.clock.advance(100)
    answer = h.http.get(f"/v1/apps/{APP}/access_token", headers=h.auth())
    assert answer.status_code == 200
    assert answer.json() == {
        "access_token": "TOKEN-" + "a" * 30,
        "expires_in": 7100,
        "expires_at": h.clock.now_s - 100 + 7200,
        "version": 7,
    }
    assert answer.headers["cache-control"] == "no-store"


def test_older_push_never_replaces_a_newer_one(h: Harness) -> None:
    """Versions only go up in what the gateway serves."""
    h.client.push(make_update(app_id=APP, version=9, value="NEWER-" + "b" * 30))
    h.client.push(make_update(app_id=APP, version=8, value="OLDER-" + "c" * 30))
    answer = h.http.get(f"/v1/apps/{APP}/access_token", headers=h.auth())
    assert answer.json()["version"] == 9


def test_expired_token_is_never_served(h: Harness) -> None:
    """Past its expires_at the held token is not served: 503 with the client's reason."""
    h.client.push(make_update(app_id=APP, lifetime_s=60))
    h.clock.advance(60)
    h.client.unavailable = f"the held access_token v1 expired at {h.clock.now_s:.0f} and ..."
    answer = h.http.get(f"/v1/apps/{APP}/access_token", headers=h.auth())
    assert answer.status_code == 503
    assert answer.headers["retry-after"] == "2"
    assert answer.json() == {"error": "unavailable", "reason": h.client.unavailable}


def test_503_names_the_producers_last_upstream_error(h: Harness) -> None:
    """With the token expired after a failed fetch, the 503 names that failure (what
    `wxtoken status` says); a failure older than the token held is not named."""
    h.client.push(make_update(app_id=APP, lifetime_s=60, issued_at=h.clock.now_s))
    h.failures[(APP, TokenKind.ACCESS_TOKEN)] = UpstreamFailure(
        at_s=h.clock.now_s - 1, failure_kind="config", errcode=40164, message="old", caller_ip=None
    )
    h.clock.advance(60)
    answer = h.http.get(f"/v1/apps/{APP}/access_token", headers=h.auth())
    assert answer.json()["reason"] == h.client.unavailable
    h.failures[(APP, TokenKind.ACCESS_TOKEN)] = UpstreamFailure(
        at_s=h.clock.now_s - 12,
        failure_kind="config",
        errcode=40164,
        caller_ip="1.2.3.4",
        message="errcode 40164: invalid ip 1.2.3.4",
    )
    answer = h.http.get(f"/v1/apps/{APP}/access_token", headers=h.auth())
    assert answer.status_code == 503
    assert answer.json()["reason"] == (
        f"{h.client.unavailable}; the producer's last fetch: "
        "IP 1.2.3.4 not whitelisted (errcode 40164, 12s ago)"
    )


def test_unknown_app_404_unless_redis_cannot_tell(h: Harness) -> None:
    """An app Redis never held is 404; with Redis down the gateway cannot tell: 503."""
    assert h.http.get("/v1/apps/wxnever/access_token", headers=h.auth()).status_code == 404
    h.store_down = True
    h.view._known_cache = None
    assert h.http.get("/v1/apps/wxnever2/access_token", headers=h.auth()).status_code == 503


@pytest.mark.parametrize(
    "header",
    [None, "", "Bearer", "Bearer ", "Basic Zm9vOmJhcg==", "Bearer wxgw_nope", "bearer\tx"],
)
def test_bad_credentials_are_401_without_echo(h: Harness, header: str | None) -> None:
    """Missing, malformed and unknown keys get 401 JSON that never repeats the header."""
    h.client.push(make_update(app_id=APP))
    headers = {} if header is None else {"Authorization": header}
    answer = h.http.get(f"/v1/apps/{APP}/access_token", headers=headers)
    assert answer.status_code == 401
    assert answer.json()["error"] == "unauthorized"
    assert "WWW-Authenticate" in answer.headers
    if header and len(header) > 8:
        assert header.split()[-1] not in answer.text


def test_scope_and_app_are_403(h: Harness) -> None:
    """A read-only key cannot report; a key for one app cannot read another."""
    h.client.push(make_update(app_id="wxapp2"))
    report = h.http.post(
        f"/v1/apps/{APP}/access_token:report",
        headers=h.auth("reader"),
        json={"access_token": "x" * 20},
    )
    assert report.status_code == 403
    other = h.http.get("/v1/apps/wxapp2/access_token", headers=h.auth("reader"))
    assert other.status_code == 403
    assert h.client.reports == []


def test_report_goes_to_report_invalid(h: Harness) -> None:
    """A report becomes report_invalid with the token from the body, the key's name as
    requester (the producer audits it: the gateway writes no audit entry)."""
    h.client.push(make_update(app_id=APP))
    answer = h.http.post(
        f"/v1/apps/{APP}/access_token:report",
        headers=h.auth(),
        json={"access_token": "REJECTED-" + "d" * 20, "reason": "errcode 40001"},
    )
    assert answer.status_code == 202
    assert answer.json() == {"app_id": APP, "reported": True, "outcome": "sent"}
    assert h.client.reports == [(APP, "REJECTED-" + "d" * 20, "errcode 40001")]
    assert h.client.requesters == ["gateway/key:all"]


@pytest.mark.parametrize("reason", ["next\x85line", "line\u2028separator", "x\u2029", "\x9f"])
def test_a_reason_the_wire_refuses_is_422(h: Harness, reason: str) -> None:
    """Issue 18 item 12: the gateway checks a reason with the refresh request's own pattern,
    so a C1 control or a line separator is 422 (before: accepted here, refused by the wire
    model: a 500), and nothing is reported."""
    h.client.push(make_update(app_id=APP))
    answer = h.http.post(
        f"/v1/apps/{APP}/access_token:report",
        headers=h.auth(),
        json={"access_token": "REJECTED-" + "d" * 20, "reason": reason},
    )
    assert answer.status_code == 422
    assert answer.json()["error"] == "invalid_body"
    assert h.client.reports == []


def test_the_gateway_and_the_wire_accept_the_same_reasons() -> None:
    """One pattern: every character the report body accepts in a reason, a refresh request
    accepts too, and the other way round (the first 0x3000 code points)."""

    def accepted(model: Callable[[str], object], reason: str) -> bool:
        try:
            model(reason)
        except ValueError:
            return False
        return True

    def body(reason: str) -> object:
        return ReportBody(access_token="T" * 20, reason=reason)

    def wire(reason: str) -> object:
        return RefreshRequest.for_token(APP, "T" * 20, requester="c", now_s=1.8e9, reason=reason)

    for code in range(0x3000):
        reason = f"a{chr(code)}b"
        assert accepted(body, reason) == accepted(wire, reason), hex(code)
    assert accepted(body, "r" * 256) == accepted(wire, "r" * 256)
    assert accepted(body, "r" * 257) == accepted(wire, "r" * 257) is False


def test_reports_about_apps_not_held_are_404(h: Harness) -> None:
    """Issue 18 item 4: a report about an app (or kind) this gateway holds no token of is
    refused with 404, before its body is read, and nothing goes to the producers."""
    h.client.push(make_update(app_id=APP))
    for app_id in ("wxnever", "wxunknown2"):
        answer = h.http.post(
            f"/v1/apps/{app_id}/access_token:report",
            headers=h.auth(),
            json={"access_token": "REJECTED-" + "d" * 20},
        )
        assert answer.status_code == 404
        assert "holds no access_token of app" in answer.json()["reason"]
    garbage = h.http.post("/v1/apps/wxnever/access_token:report", headers=h.auth(), content=b"{")
    assert garbage.status_code == 404
    assert h.client.reports == []


@pytest.mark.parametrize(
    ("outcome", "words"),
    [
        (ReportOutcome.COALESCED, "coalesced"),
        (ReportOutcome.NOT_CURRENT, "not the current token"),
        (ReportOutcome.BROKER_UNREACHABLE, "broker is unreachable"),
    ],
)
def test_a_report_not_sent_says_why(h: Harness, outcome: ReportOutcome, words: str) -> None:
    """`{"reported": false}` comes with the outcome and a reason in words."""
    h.client.push(make_update(app_id=APP))
    h.client.outcome = outcome
    answer = h.http.post(
        f"/v1/apps/{APP}/access_token:report", headers=h.auth(), json={"access_token": "x" * 20}
    )
    assert answer.status_code == 202
    body = answer.json()
    assert (body["reported"], body["outcome"]) == (False, outcome.value)
    assert words in body["reason"]


def test_accesstoken_without_appid_serves_the_keys_only_app(
    tmp_path: Path, clock: FakeClock
) -> None:
    """`GET /accesstoken` with no `?appid=` serves the one app a key may use, although the
    gateway holds several; a key for several apps still gets 404 asking for ?appid=."""
    harness = Harness(tmp_path, clock)
    harness.client.push(make_update(app_id=APP, value="PLAIN-" + "f" * 30))
    harness.client.push(make_update(app_id="wxapp2", value="OTHER-" + "g" * 30))
    with harness.http:
        answer = harness.http.get("/accesstoken", headers=harness.auth("reader"))
        assert answer.status_code == 200, answer.text
        assert answer.text == "PLAIN-" + "f" * 30
        several = harness.http.get("/accesstoken", headers=harness.auth("all"))
        assert several.status_code == 404
        assert "appid" in several.json()["reason"]


def test_jssdk_config_refuses_a_port_out_of_range(h: Harness) -> None:
    """A page URL with a port past 65535 (or 0) is 422, before any ticket is looked at."""
    for url in ("http://h5.example.com:99999/x", "http://h5.example.com:0/x"):
        answer = h.http.get(f"/v1/apps/{APP}/jssdk-config", params={"url": url}, headers=h.auth())
        assert answer.status_code == 422, url
        assert "port" in answer.json()["reason"]


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"null",
        b'"token"',
        b'{"access_token": ""}',
        b'{"access_token": "has space"}',
        b'{"access_token": "' + b"a" * 513 + b'"}',
        b'{"access_token": "abc", "reason": "line\\nbreak"}',
        b'{"access_token": "abc", "other": 1}',
        b"\xff\xfe",
    ],
)
def test_malformed_report_bodies_are_422(h: Harness, body: bytes) -> None:
    """Garbage bodies are 422 and report nothing."""
    h.client.push(make_update(app_id=APP))
    answer = h.http.post(
        f"/v1/apps/{APP}/access_token:report",
        headers={**h.auth(), "Content-Type": "application/json"},
        content=body,
    )
    assert answer.status_code == 422
    assert answer.json()["error"] == "invalid_body"
    assert h.client.reports == []


def test_oversize_bodies_are_413_declared_or_streamed(h: Harness) -> None:
    """A body over the limit is refused whether its length is declared or streamed."""
    h.client.push(make_update(app_id=APP))
    big = b'{"access_token": "' + b"a" * 5000 + b'"}'
    declared = h.http.post(f"/v1/apps/{APP}/access_token:report", headers=h.auth(), content=big)
    assert declared.status_code == 413
    streamed = h.http.post(
        f"/v1/apps/{APP}/access_token:report",
        headers=h.auth(),
        content=iter([big[:3000], big[3000:]]),
    )
    assert streamed.status_code == 413
    assert h.client.reports == []


def test_override_without_operator_key_is_501(h: Harness) -> None:
    """A gateway with no signing key refuses overrides and says why."""
    answer = h.http.post(
        f"/v1/apps/{APP}/access_token",
        headers=h.auth(),
        json={"access_token": "OVERRIDE-" + "e" * 20, "expires_in": 600},
    )
    assert answer.status_code == 501
    assert "WXTOKEN_SIGNING_KEY_FILE" in answer.json()["reason"]


def test_rate_limit_429(tmp_path: Path, clock: FakeClock) -> None:
    """Past its burst a key gets 429 with Retry-After; the fast path and the slow one agree."""
    harness = Harness(tmp_path, clock, default_rate_per_s=1.0)
    harness.client.push(make_update(app_id=APP))
    with harness.http:
        codes = [
            harness.http.get(f"/v1/apps/{APP}/access_token", headers=harness.auth()).status_code
            for _ in range(3)
        ]
        assert codes == [200, 200, 429]
        limited = harness.http.get(f"/v1/apps/{APP}/access_token", headers=harness.auth())
        assert limited.headers["retry-after"] == "1"
        clock.advance(1.0)
        assert (
            harness.http.get(f"/v1/apps/{APP}/access_token", headers=harness.auth()).status_code
            == 200
        )


def test_readyz_is_not_ready_while_the_broker_refuses_the_login(h: Harness) -> None:
    """A refused broker login is a configuration error: /readyz says so (503) even with
    tokens held from Redis, and is ready again once the broker accepts."""
    h.client.push(make_update(app_id=APP))
    assert h.http.get("/readyz").status_code == 200
    h.client.broker_login_refused = (
        "the broker refused user 'wxtoken-gateway' (ACCESS_REFUSED: wrong user or password): "
        "check the user and password in WXTOKEN_AMQP_URL"
    )
    answer = h.http.get("/readyz")
    assert answer.status_code == 503
    assert answer.json()["reason"] == h.client.broker_login_refused
    h.client.broker_login_refused = None
    assert h.http.get("/readyz").status_code == 200


def test_legacy_route(tmp_path: Path, clock: FakeClock) -> None:
    """`/accesstoken` answers the bare token; anonymous only when configured so."""
    for anonymous in (False, True):
        (tmp_path / str(anonymous)).mkdir()
        harness = Harness(tmp_path / str(anonymous), clock, legacy_anonymous=anonymous)
        harness.client.push(make_update(app_id=APP, value="PLAIN-" + "f" * 30))
        with harness.http:
            keyed = harness.http.get("/accesstoken", headers=harness.auth())
            assert keyed.text == "PLAIN-" + "f" * 30
            bare = harness.http.get(f"/accesstoken?appid={APP}")
            assert bare.status_code == (200 if anonymous else 401)
            assert harness.http.get("/accesstoken?appid=bad%20id").status_code in (401, 404)


def test_health_and_unknown_routes(h: Harness) -> None:
    """/healthz is alive, /readyz is 503 until a token is held, a status and nothing more
    (issue 18, item 10: it used to count tokens); unknown routes are JSON 404."""
    assert h.http.get("/healthz").status_code == 200
    not_ready = h.http.get("/readyz")
    assert (not_ready.status_code, not_ready.json()) == (503, {"status": "not ready"})
    h.client.push(make_update(app_id=APP))
    assert h.http.get("/readyz").json() == {"status": "ready"}
    missing = h.http.get("/v1/nothing")
    assert missing.status_code == 404
    assert missing.json()["error"] == "not_found"
    assert h.http.delete(f"/v1/apps/{APP}/access_token").status_code == 405


def test_every_answer_is_counted_by_status(h: Harness) -> None:
    """Fast reads, Starlette's answers and errors all land in the status counts."""
    h.client.push(make_update(app_id=APP))
    h.http.get(f"/v1/apps/{APP}/access_token", headers=h.auth())
    h.http.get(f"/v1/apps/{APP}/access_token")
    h.http.get("/v1/nothing")
    h.http.get("/healthz")
    assert h.gateway.responses == {200: 2, 401: 1, 404: 1}


def test_the_api_port_serves_no_metrics(tmp_path: Path, clock: FakeClock) -> None:
    """`/metrics` names every app, kind, version and seconds left: it is not on the API's
    port, with a key or without (issue 18, item 10: before, 200 to anyone); it is served on
    the metrics listener (`test_gateway_settings.py`)."""
    harness = Harness(tmp_path, clock)
    harness.gateway.metrics = lambda: (
        b'wxtoken_client_token_version{app_id="wxapp1"} 7\n',
        "text/plain",
    )
    harness.client.push(make_update(app_id=APP))
    with harness.http:
        for headers in ({}, harness.auth()):
            answer = harness.http.get("/metrics", headers=headers)
            assert answer.status_code == 404
            assert APP not in answer.text
