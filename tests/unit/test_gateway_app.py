"""The gateway's routes in-process (Starlette's TestClient), with a fake TokenClient."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from consumer_lib import StoreError, TokenKind, TokenUnavailable, TokenUpdate
from ops.gateway import KeyRing, add_key
from ops.gateway._app import Gateway
from ops.gateway._ratelimit import RateLimiter
from ops.gateway._routes import build_app
from ops.gateway._tokens import TokenView
from tests.conftest import FakeClock
from tests.unit._helpers import make_update

APP = "wxapp1"


class FakeClient:
    """What the gateway uses of TokenClient, with no thread and no broker."""

    def __init__(self) -> None:
        self.callbacks: list[Callable[[TokenUpdate], None]] = []
        self.reports: list[tuple[str, str, str | None]] = []
        self.connected = True
        self.unavailable = "no access_token for app 'wxapp2' and none arrived within 0 s"

    def on_update(self, callback: Callable[[TokenUpdate], None]) -> None:
        self.callbacks.append(callback)

    def push(self, update: TokenUpdate) -> None:
        for callback in self.callbacks:
            callback(update)

    def get(self, app_id: str, timeout: float = 5.0, *, kind: TokenKind) -> TokenUpdate:
        raise TokenUnavailable(self.unavailable)

    def held_body(self, app_id: str, kind: TokenKind) -> tuple[TokenUpdate, bytes] | None:
        return None  # the stream's tests (test_gateway_stream) carry bytes

    def report_invalid(
        self, app_id: str, token: str, *, kind: TokenKind, reason: str | None = None
    ) -> bool:
        self.reports.append((app_id, token, reason))
        return True


class Harness:
    def __init__(self, tmp_path: Path, clock: FakeClock, **gateway_kw: Any) -> None:
        self.clock = clock
        self.client = FakeClient()
        self.known: list[tuple[str, TokenKind]] = [(APP, TokenKind.ACCESS_TOKEN)]
        self.store_down = False
        path = tmp_path / "keys.json"
        self.keys = {
            "all": add_key(path, "all", apps=["wx*"], scopes=["read", "report", "override"]),
            "reader": add_key(path, "reader", apps=[APP], scopes=["read"]),
        }
        self.view = TokenView(self.client, self._known, clock=clock)  # type: ignore[arg-type]
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
    """A report becomes report_invalid with the token from the body."""
    answer = h.http.post(
        f"/v1/apps/{APP}/access_token:report",
        headers=h.auth(),
        json={"access_token": "REJECTED-" + "d" * 20, "reason": "errcode 40001"},
    )
    assert answer.status_code == 202
    assert answer.json() == {"app_id": APP, "reported": True}
    assert h.client.reports == [(APP, "REJECTED-" + "d" * 20, "errcode 40001")]


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
    """/healthz is alive, /readyz is 503 until a token is held; unknown routes are JSON 404."""
    assert h.http.get("/healthz").status_code == 200
    assert h.http.get("/readyz").status_code == 503
    h.client.push(make_update(app_id=APP))
    assert h.http.get("/readyz").json()["status"] == "ready"
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
