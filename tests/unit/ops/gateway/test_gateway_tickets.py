"""The gateway's ticket reads and its signed wx.config, in-process, with a fake TokenClient."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from consumer_lib import TokenKind
from consumer_lib.jssdk import jssdk_signature
from tests.conftest import FakeClock
from tests.unit._helpers import make_update
from tests.unit.ops.gateway.test_gateway_app import APP, Harness

TICKET = "TICKET-" + "t" * 40
PAGE = "https://h5.example.com/pay?order=42&x=a%20b"


@pytest.fixture
def h(tmp_path: Path, clock: FakeClock) -> Iterator[Harness]:
    harness = Harness(tmp_path, clock)
    harness.known.append((APP, TokenKind.JSAPI_TICKET))
    with harness.http:
        yield harness


def _push_ticket(h: Harness, *, version: int = 3, kind: TokenKind = TokenKind.JSAPI_TICKET) -> None:
    h.client.push(
        make_update(app_id=APP, version=version, value=TICKET, kind=kind, issued_at=h.clock.now_s)
    )


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("jsapi", TokenKind.JSAPI_TICKET),
        ("wx_card", TokenKind.WX_CARD_TICKET),
        ("corp_jsapi", TokenKind.CORP_JSAPI_TICKET),
        ("agent_config", TokenKind.AGENT_CONFIG_TICKET),
    ],
)
def test_each_ticket_is_read_from_memory(h: Harness, name: str, kind: TokenKind) -> None:
    """A pushed ticket is served under tickets/<name> with seconds left, expiry and version,
    and the access token's route does not serve it."""
    _push_ticket(h, version=5, kind=kind)
    h.clock.advance(200)
    answer = h.http.get(f"/v1/apps/{APP}/tickets/{name}", headers=h.auth())
    assert answer.status_code == 200
    assert answer.json() == {
        "ticket": TICKET,
        "expires_in": 7000,
        "expires_at": h.clock.now_s - 200 + 7200,
        "version": 5,
    }
    assert answer.headers["cache-control"] == "no-store"
    assert h.http.get(f"/v1/apps/{APP}/access_token", headers=h.auth()).status_code == 503


def test_ticket_misses_unknown_types_and_apps(h: Harness) -> None:
    """An unknown ticket type or app is 404, a known ticket not held is 503 with Retry-After,
    an expired one is never served."""
    answer = h.http.get(f"/v1/apps/{APP}/tickets/jsapi2", headers=h.auth())
    assert answer.status_code == 404
    assert "jsapi, wx_card" in answer.json()["reason"]
    assert h.http.get(f"/v1/apps/{APP}/tickets/", headers=h.auth()).status_code == 404
    assert h.http.get("/v1/apps/wxnobody/tickets/jsapi", headers=h.auth()).status_code == 404
    missing = h.http.get(f"/v1/apps/{APP}/tickets/jsapi", headers=h.auth())
    assert missing.status_code == 503
    assert missing.headers["retry-after"]
    _push_ticket(h)
    h.clock.advance(7200)
    assert h.http.get(f"/v1/apps/{APP}/tickets/jsapi", headers=h.auth()).status_code == 503


def test_ticket_reads_need_a_key_that_may_read_the_app(h: Harness) -> None:
    """No key is 401, a key for another app is 403, even when the ticket is held."""
    _push_ticket(h)
    assert h.http.get(f"/v1/apps/{APP}/tickets/jsapi").status_code == 401
    h.client.push(make_update(app_id="wxother", value=TICKET, kind=TokenKind.JSAPI_TICKET))
    other = h.http.get("/v1/apps/wxother/tickets/jsapi", headers=h.auth("reader"))
    assert other.status_code == 403
    assert h.keys["reader"] not in other.text


def test_jssdk_config_is_signed_with_the_held_ticket(h: Harness) -> None:
    """wx.config's fields, signed with the held jsapi ticket over the page's URL up to '#',
    at the gateway's clock; each answer a fresh nonce."""
    _push_ticket(h)
    answer = h.http.get(
        f"/v1/apps/{APP}/jssdk-config", params={"url": PAGE + "#/confirm"}, headers=h.auth()
    )
    assert answer.status_code == 200
    assert answer.headers["cache-control"] == "no-store"
    config = answer.json()
    assert set(config) == {"appId", "timestamp", "nonceStr", "signature"}
    assert config["appId"] == APP
    assert config["timestamp"] == int(h.clock.now_s)
    assert config["signature"] == jssdk_signature(
        TICKET, config["nonceStr"], config["timestamp"], PAGE
    )
    again = h.http.get(f"/v1/apps/{APP}/jssdk-config", params={"url": PAGE}, headers=h.auth())
    assert again.json()["nonceStr"] != config["nonceStr"]


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"url": ""},
        {"url": "/pay?order=42"},
        {"url": "ftp://h5.example.com/pay"},
        {"url": "https://h5.example.com/a b"},
        {"url": "https://h5.example.com/\x00"},
        {"url": "https:///no-host"},
        {"url": "https://h5.example.com/" + "a" * 5000},
    ],
)
def test_bad_page_urls_are_422(h: Harness, params: dict[str, str]) -> None:
    """A missing, relative, non-http(s), spaced, control-character, hostless or oversize URL
    is 422 with a reason, whether or not a ticket is held."""
    for _ in range(2):
        answer = h.http.get(f"/v1/apps/{APP}/jssdk-config", params=params, headers=h.auth())
        assert answer.status_code == 422, answer.text
        assert answer.json()["reason"]
        _push_ticket(h)


def test_jssdk_config_misses(h: Harness) -> None:
    """No key 401, another app's key 403, an unknown app 404, no ticket held 503."""
    params = {"url": PAGE}
    assert h.http.get(f"/v1/apps/{APP}/jssdk-config", params=params).status_code == 401
    assert (
        h.http.get("/v1/apps/wxother/jssdk-config", params=params, headers=h.auth("reader"))
    ).status_code == 403
    assert (
        h.http.get("/v1/apps/wxnobody/jssdk-config", params=params, headers=h.auth())
    ).status_code == 404
    missing = h.http.get(f"/v1/apps/{APP}/jssdk-config", params=params, headers=h.auth())
    assert missing.status_code == 503
    assert missing.headers["retry-after"]


def test_openapi_documents_the_ticket_and_jssdk_routes(h: Harness) -> None:
    """The served document has both routes with their parameters and answers."""
    document = h.http.get("/v1/openapi.json").json()
    tickets = document["paths"]["/v1/apps/{app_id}/tickets/{type}"]["get"]
    (kind_param,) = [p for p in tickets["parameters"] if p["name"] == "type"]
    assert kind_param["schema"]["enum"] == ["jsapi", "wx_card", "corp_jsapi", "agent_config"]
    assert {"200", "401", "403", "404", "503"} <= set(tickets["responses"])
    jssdk = document["paths"]["/v1/apps/{app_id}/jssdk-config"]["get"]
    (url_param,) = [p for p in jssdk["parameters"] if p["name"] == "url"]
    assert url_param["required"] is True
    assert {"200", "401", "403", "404", "422", "503"} <= set(jssdk["responses"])
    assert "JsSdkConfig" in document["components"]["schemas"]


def test_the_documented_url_pattern_is_the_one_enforced() -> None:
    """The OpenAPI document's url pattern is the gateway's own (fuzzing relies on it)."""
    from ops.gateway import _openapi
    from ops.gateway._app import PAGE_URL

    assert PAGE_URL.pattern == _openapi._PAGE_URL
    assert PAGE_URL.fullmatch(PAGE)
    assert not PAGE_URL.fullmatch("https://h5.example.com/\n")
