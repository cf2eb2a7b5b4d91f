"""Tickets, WeCom tokens, the token check and clear_quota: every answer judged strictly."""

from __future__ import annotations

import json
import traceback
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import responses
from pydantic import SecretStr
from responses import matchers

from consumer_lib import Platform, TokenKind
from producer.apps import AppConfig, TokenApi
from producer.upstream.errcodes import FailureKind
from producer.upstream.errors import MAX_ANSWER_BYTES, FetchedToken, UpstreamError, caller_ip_from
from producer.upstream.routing import Upstream
from producer.upstream.wechat import TokenCheck, WeChatClient
from producer.upstream.wecom import WecomClient

WX = "https://api.weixin.qq.com"
QY = "https://qyapi.weixin.qq.com"
SECRET = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
TOKEN = "ACCESS_TOKEN_" + "y" * 100
TICKET = "TICKET_" + "t" * 80
GETTICKET = f"{WX}/cgi-bin/ticket/getticket"
GETTOKEN = f"{QY}/cgi-bin/gettoken"
CORP_TICKET = f"{QY}/cgi-bin/get_jsapi_ticket"
AGENT_TICKET = f"{QY}/cgi-bin/ticket/get"

OFFICIAL = AppConfig(
    app_id="wxa",
    secret=SecretStr(SECRET),
    tickets=(TokenKind.JSAPI_TICKET, TokenKind.WX_CARD_TICKET),
)
AGENT = AppConfig(
    app_id="hr",
    secret=SecretStr(SECRET),
    platform=Platform.WECOM,
    token_api=TokenApi.WECOM,
    corp_id="ww_corp",
    agent_id="1000002",
    tickets=(TokenKind.CORP_JSAPI_TICKET, TokenKind.AGENT_CONFIG_TICKET),
)


@pytest.fixture
def mock() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        yield rsps


@pytest.fixture
def upstream() -> Upstream:
    return Upstream(WeChatClient(WX), WecomClient(QY + "/"))


def error_of(call: Any, *args: Any) -> UpstreamError:
    """Run the call, which must fail; check neither secret nor token shows in the error."""
    with pytest.raises(UpstreamError) as info:
        call(*args)
    shown = str(info.value) + repr(info.value) + "".join(traceback.format_exception(info.value))
    assert SECRET not in shown
    assert TOKEN not in shown
    return info.value


# ------------------------------------------------------------------ official-account tickets
@pytest.mark.parametrize(
    ("kind", "ticket_type"), [("jsapi_ticket", "jsapi"), ("wx_card_ticket", "wx_card")]
)
def test_ticket_is_fetched_with_the_token(
    mock: responses.RequestsMock, upstream: Upstream, kind: str, ticket_type: str
) -> None:
    """getticket gets the given access token and type; the ticket and its life come back."""
    mock.get(
        GETTICKET,
        json={"errcode": 0, "errmsg": "ok", "ticket": TICKET, "expires_in": 7200},
        match=[matchers.query_param_matcher({"access_token": TOKEN, "type": ticket_type})],
    )
    fetched = upstream.fetch_ticket(OFFICIAL, TokenKind(kind), TOKEN)
    assert fetched == FetchedToken(value=TICKET, expires_in_s=7200)


@pytest.mark.parametrize(
    ("errcode", "kind"),
    [
        (40001, FailureKind.TOKEN_INVALID),
        (42001, FailureKind.TOKEN_INVALID),
        (40014, FailureKind.TOKEN_INVALID),
        (45009, FailureKind.QUOTA),
        (-1, FailureKind.TRANSIENT),
        (40097, FailureKind.CONFIG),
        (99999, FailureKind.TRANSIENT),
    ],
)
def test_ticket_errcodes_are_classified(
    mock: responses.RequestsMock, upstream: Upstream, errcode: int, kind: FailureKind
) -> None:
    """A dead token on a ticket fetch is TOKEN_INVALID (refresh it first), not a bad secret."""
    mock.get(GETTICKET, json={"errcode": errcode, "errmsg": "nope"})
    error = error_of(upstream.fetch_ticket, OFFICIAL, TokenKind.JSAPI_TICKET, TOKEN)
    assert (error.kind, error.errcode) == (kind, errcode)


def test_40001_on_a_token_fetch_stays_a_config_failure(
    mock: responses.RequestsMock, upstream: Upstream
) -> None:
    """40001 answering a token fetch means a wrong secret: CONFIG, as before."""
    mock.post(f"{WX}/cgi-bin/stable_token", json={"errcode": 40001, "errmsg": "invalid credential"})
    assert error_of(upstream.fetch, OFFICIAL).kind is FailureKind.CONFIG


BAD_TICKET_ANSWERS: list[tuple[dict[str, Any], str]] = [
    ({"body": "<html>维护中</html>", "content_type": "text/html"}, "not JSON"),
    ({"body": '{"ticket": "ab'}, "not JSON"),
    ({"json": ["ticket", TICKET]}, "not a JSON object"),
    ({"json": {"errcode": "0", "ticket": TICKET, "expires_in": 7200}}, "non-integer errcode"),
    ({"json": {"errcode": True, "ticket": TICKET, "expires_in": 7200}}, "non-integer errcode"),
    ({"json": {"errcode": 0, "expires_in": 7200}}, "usable ticket"),
    ({"json": {"errcode": 0, "ticket": 12345, "expires_in": 7200}}, "usable ticket"),
    ({"json": {"errcode": 0, "ticket": "", "expires_in": 7200}}, "usable ticket"),
    ({"json": {"errcode": 0, "ticket": "T" * 513, "expires_in": 7200}}, "usable ticket"),
    ({"json": {"errcode": 0, "ticket": "a b", "expires_in": 7200}}, "whitespace"),
    ({"json": {"errcode": 0, "ticket": "ab\x00", "expires_in": 7200}}, "whitespace or control"),
    ({"json": {"errcode": 0, "ticket": TICKET}}, "sensible expires_in"),
    ({"json": {"errcode": 0, "ticket": TICKET, "expires_in": "7200"}}, "sensible expires_in"),
    ({"json": {"errcode": 0, "ticket": TICKET, "expires_in": True}}, "sensible expires_in"),
    ({"json": {"errcode": 0, "ticket": TICKET, "expires_in": 0}}, "sensible expires_in"),
    ({"json": {"errcode": 0, "ticket": TICKET, "expires_in": 10**9}}, "sensible expires_in"),
    ({"status": 502, "body": "bad gateway"}, "HTTP 502"),
    ({"body": b"{" + b" " * (MAX_ANSWER_BYTES + 10) + b"}"}, f"over {MAX_ANSWER_BYTES} bytes"),
]


@pytest.mark.parametrize(("reply", "message"), BAD_TICKET_ANSWERS)
def test_bad_ticket_answers_are_transient_errors(
    mock: responses.RequestsMock, upstream: Upstream, reply: dict[str, Any], message: str
) -> None:
    """Garbage, wrong types, missing fields and oversize answers are named, never accepted."""
    mock.get(GETTICKET, **reply)
    error = error_of(upstream.fetch_ticket, OFFICIAL, TokenKind.JSAPI_TICKET, TOKEN)
    assert error.kind is FailureKind.TRANSIENT
    assert message in str(error)


def test_connection_errors_hide_the_token(mock: responses.RequestsMock, upstream: Upstream) -> None:
    """A failed ticket request is transient and its text, holding the URL and token, is dropped."""
    mock.get(
        GETTICKET, body=requests.ConnectionError(f"cannot reach {GETTICKET}?access_token={TOKEN}")
    )
    error = error_of(upstream.fetch_ticket, OFFICIAL, TokenKind.JSAPI_TICKET, TOKEN)
    assert str(error) == "request failed (ConnectionError)"


def test_ticket_kind_must_belong_to_the_app(upstream: Upstream) -> None:
    """Asking for a ticket the app does not keep, or another platform's, is a ValueError."""
    with pytest.raises(ValueError, match="does not keep"):
        upstream.fetch_ticket(OFFICIAL, TokenKind.AGENT_CONFIG_TICKET, TOKEN)
    with pytest.raises(ValueError, match="not an official account's ticket"):
        upstream.wechat.fetch_ticket(TokenKind.CORP_JSAPI_TICKET, TOKEN)


# ------------------------------------------------------------------ caller IP
@pytest.mark.parametrize(
    ("errcode", "errmsg", "ip"),
    [
        (40164, "invalid ip 1.2.3.4 ipv6 ::ffff:1.2.3.4, not in whitelist rid: 6412-ab", "1.2.3.4"),
        (61004, "access clientip is not registered, ip: 203.0.113.9 rid: 1", "203.0.113.9"),
        (40164, "invalid ip  ipv6 2001:db8::7, not in whitelist", "2001:db8::7"),
        (40164, "invalid ip 999.1.1.1 ipv6 ::ffff:999.1.1.1, not in whitelist", None),
        (40164, "not in whitelist", None),
    ],
)
def test_ip_errors_name_the_caller_ip(
    mock: responses.RequestsMock, upstream: Upstream, errcode: int, errmsg: str, ip: str | None
) -> None:
    """40164/61004 carry the caller IP named in errmsg, validated; a bogus one is dropped."""
    mock.post(f"{WX}/cgi-bin/stable_token", json={"errcode": errcode, "errmsg": errmsg})
    error = error_of(upstream.fetch, OFFICIAL)
    assert (error.kind, error.caller_ip) == (FailureKind.CONFIG, ip)
    if ip is not None:
        assert f"whitelist caller IP {ip}" in str(error)


def test_wecom_60020_names_the_caller_ip(mock: responses.RequestsMock, upstream: Upstream) -> None:
    """WeCom's 60020 errmsg names the IP after its hint; that IP is extracted."""
    errmsg = (
        "not allow to access from your ip, hint: [1700000000_12_abc], "
        "from ip: 198.51.100.4, more info"
    )
    mock.get(GETTOKEN, json={"errcode": 60020, "errmsg": errmsg})
    error = error_of(upstream.fetch, AGENT)
    assert (error.kind, error.caller_ip) == (FailureKind.CONFIG, "198.51.100.4")


def test_caller_ip_from_ignores_hex_words() -> None:
    """Words that merely look hexadecimal are not addresses."""
    assert caller_ip_from("bad face dead beef, ip: ::ffff:10.0.0.1") == "10.0.0.1"
    assert caller_ip_from("rid: 6412ab-0f3c2b1e") is None


def test_errmsg_is_one_printable_line(mock: responses.RequestsMock, upstream: Upstream) -> None:
    """Control characters and newlines in errmsg never reach the log line."""
    mock.get(GETTICKET, json={"errcode": 45009, "errmsg": "quota\n\x1b[31mred\x07 " + "z" * 500})
    message = str(error_of(upstream.fetch_ticket, OFFICIAL, TokenKind.JSAPI_TICKET, TOKEN))
    assert "\n" not in message
    assert "\x1b" not in message
    assert len(message) < 300


# ------------------------------------------------------------------ WeCom
def test_wecom_token_uses_the_agents_own_secret(
    mock: responses.RequestsMock, upstream: Upstream
) -> None:
    """gettoken gets the corp id and this agent's secret; the token and its life come back."""
    mock.get(
        GETTOKEN,
        json={"errcode": 0, "errmsg": "ok", "access_token": TOKEN, "expires_in": 5400},
        match=[matchers.query_param_matcher({"corpid": "ww_corp", "corpsecret": SECRET})],
    )
    assert upstream.fetch(AGENT) == FetchedToken(value=TOKEN, expires_in_s=5400)


@pytest.mark.parametrize(
    ("errcode", "kind"),
    [
        (40013, FailureKind.CONFIG),
        (40001, FailureKind.CONFIG),
        (41004, FailureKind.CONFIG),
        (60020, FailureKind.CONFIG),
        (45009, FailureKind.QUOTA),
        (-1, FailureKind.TRANSIENT),
    ],
)
def test_wecom_gettoken_errcodes(
    mock: responses.RequestsMock, upstream: Upstream, errcode: int, kind: FailureKind
) -> None:
    """WeCom's gettoken errcodes: 40013 bad corpid and 40001 bad secret are configuration."""
    mock.get(GETTOKEN, json={"errcode": errcode, "errmsg": "x"})
    assert error_of(upstream.fetch, AGENT).kind is kind


@pytest.mark.parametrize(
    ("kind", "url", "params"),
    [
        (TokenKind.CORP_JSAPI_TICKET, CORP_TICKET, {"access_token": TOKEN}),
        (
            TokenKind.AGENT_CONFIG_TICKET,
            AGENT_TICKET,
            {"access_token": TOKEN, "type": "agent_config"},
        ),
    ],
)
def test_wecom_tickets(
    mock: responses.RequestsMock,
    upstream: Upstream,
    kind: TokenKind,
    url: str,
    params: dict[str, str],
) -> None:
    """The corp and agent tickets come from their own endpoints, with the agent's token."""
    mock.get(
        url,
        json={"errcode": 0, "errmsg": "ok", "ticket": TICKET, "expires_in": 7200},
        match=[matchers.query_param_matcher(params)],
    )
    assert upstream.fetch_ticket(AGENT, kind, TOKEN).value == TICKET


@pytest.mark.parametrize(
    ("errcode", "kind"),
    [
        (40014, FailureKind.TOKEN_INVALID),
        (42001, FailureKind.TOKEN_INVALID),
        (301002, FailureKind.TOKEN_INVALID),
        (45009, FailureKind.QUOTA),
        (40001, FailureKind.CONFIG),
    ],
)
def test_wecom_ticket_errcodes(
    mock: responses.RequestsMock, upstream: Upstream, errcode: int, kind: FailureKind
) -> None:
    """On a WeCom ticket call 40014/42001/301002 blame the token; 45009 is the hourly limit."""
    mock.get(AGENT_TICKET, json={"errcode": errcode, "errmsg": "x"})
    error = error_of(upstream.fetch_ticket, AGENT, TokenKind.AGENT_CONFIG_TICKET, TOKEN)
    assert error.kind is kind


@pytest.mark.parametrize(("reply", "message"), BAD_TICKET_ANSWERS[:6])
def test_bad_wecom_token_answers(
    mock: responses.RequestsMock, upstream: Upstream, reply: dict[str, Any], message: str
) -> None:
    """gettoken's garbage is judged like WeChat's."""
    mock.get(GETTOKEN, **reply)
    assert error_of(upstream.fetch, AGENT).kind is FailureKind.TRANSIENT


def test_wecom_client_refuses_an_official_account(upstream: Upstream) -> None:
    """Each client refuses the other platform's app rather than send its secret there."""
    assert error_of(upstream.wecom.fetch, OFFICIAL).kind is FailureKind.CONFIG
    assert error_of(upstream.wechat.fetch, AGENT).kind is FailureKind.CONFIG


# ------------------------------------------------------------------ token check
@pytest.mark.parametrize(("app", "base"), [(OFFICIAL, WX), (AGENT, QY)])
def test_check_token_accepted_and_refused(
    mock: responses.RequestsMock, upstream: Upstream, app: AppConfig, base: str
) -> None:
    """getcallbackip says accepted for a live token and refused for a dead one."""
    url = f"{base}/cgi-bin/getcallbackip"
    mock.get(url, json={"ip_list": ["101.226.103.0/25"]})
    mock.get(url, json={"errcode": 42001, "errmsg": "access_token expired"})
    assert upstream.check_token(app, TOKEN) is TokenCheck.ACCEPTED
    assert upstream.check_token(app, TOKEN) is TokenCheck.REFUSED


@pytest.mark.parametrize(
    "reply",
    [
        {"json": {"errcode": -1, "errmsg": "busy"}},
        {"json": {"ip_list": "1.2.3.4"}},
        {"json": {"ip_list": [1, 2]}},
        {"json": {}},
        {"body": "<html/>"},
    ],
)
def test_check_token_raises_when_the_answer_says_nothing(
    mock: responses.RequestsMock, upstream: Upstream, reply: dict[str, Any]
) -> None:
    """Busy or malformed answers raise: they tell nothing about the token."""
    mock.get(f"{WX}/cgi-bin/getcallbackip", **reply)
    error_of(upstream.check_token, OFFICIAL, TOKEN)


# ------------------------------------------------------------------ clear_quota
def test_clear_quota_posts_appid_and_secret(
    mock: responses.RequestsMock, upstream: Upstream
) -> None:
    """clear_quota/v2 gets the app id and secret in its JSON body."""
    mock.post(
        f"{WX}/cgi-bin/clear_quota/v2",
        json={"errcode": 0, "errmsg": "ok"},
        match=[matchers.json_params_matcher({"appid": "wxa", "appsecret": SECRET})],
    )
    upstream.clear_quota(OFFICIAL)


def test_clear_quota_used_up_is_a_quota_failure(
    mock: responses.RequestsMock, upstream: Upstream
) -> None:
    """48006 (10 a month used up) is a quota failure saying so."""
    mock.post(f"{WX}/cgi-bin/clear_quota/v2", json={"errcode": 48006, "errmsg": "forbid"})
    error = error_of(upstream.clear_quota, OFFICIAL)
    assert error.kind is FailureKind.QUOTA
    assert "used up" in str(error)


def test_clear_quota_is_not_for_wecom(upstream: Upstream) -> None:
    """WeCom has no clear_quota: asking is a ValueError, nothing is sent."""
    with pytest.raises(ValueError, match="WeCom"):
        upstream.clear_quota(AGENT)


def test_json_body_is_never_logged(mock: responses.RequestsMock, upstream: Upstream) -> None:
    """An errcode answer's message carries the errmsg only, not the whole answer."""
    mock.get(GETTICKET, body=json.dumps({"errcode": 45009, "errmsg": "limit", "ticket": TICKET}))
    assert TICKET not in str(
        error_of(upstream.fetch_ticket, OFFICIAL, TokenKind.JSAPI_TICKET, TOKEN)
    )
