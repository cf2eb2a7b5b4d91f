"""`WeChatClient`: the requests it sends, how it judges answers, and that secrets stay out."""

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

from producer.apps import AppConfig, TokenApi
from producer.upstream.errcodes import FailureKind
from producer.upstream.wechat import FetchedToken, UpstreamError, WeChatClient

BASE = "https://api.weixin.qq.com"
SECRET = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
TOKEN = "ACCESS_TOKEN_" + "x" * 100
STABLE_URL = f"{BASE}/cgi-bin/stable_token"
CLASSIC_URL = f"{BASE}/cgi-bin/token"

STABLE_APP = AppConfig(app_id="wxstable", secret=SecretStr(SECRET), token_api=TokenApi.STABLE)
CLASSIC_APP = AppConfig(app_id="wxclassic", secret=SecretStr(SECRET), token_api=TokenApi.CLASSIC)


@pytest.fixture
def mock() -> Iterator[responses.RequestsMock]:
    """A responses mock that fails the test if a registered answer is never requested."""
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        yield rsps


@pytest.fixture
def client() -> WeChatClient:
    return WeChatClient(BASE + "/", connect_timeout_s=1.0, read_timeout_s=2.0)


def answer(mock: responses.RequestsMock, **kwargs: Any) -> None:
    """Register one answer of the stable endpoint."""
    mock.add(responses.POST, STABLE_URL, **kwargs)


def fetch_error(client: WeChatClient, app: AppConfig = STABLE_APP) -> UpstreamError:
    """Fetch, which must fail; return the error after checking it hides the secret."""
    with pytest.raises(UpstreamError) as info:
        client.fetch(app)
    error = info.value
    shown = str(error) + repr(error) + "".join(traceback.format_exception(error))
    assert SECRET not in shown
    return error


# ------------------------------------------------------------------ requests sent
def test_stable_posts_json_body(mock: responses.RequestsMock, client: WeChatClient) -> None:
    """The stable API gets a POST with appid, secret, grant_type and force_refresh false."""
    answer(
        mock,
        json={"access_token": TOKEN, "expires_in": 7200},
        match=[
            matchers.json_params_matcher(
                {
                    "grant_type": "client_credential",
                    "appid": "wxstable",
                    "secret": SECRET,
                    "force_refresh": False,
                }
            )
        ],
    )
    assert client.fetch(STABLE_APP) == FetchedToken(value=TOKEN, expires_in_s=7200)


def test_stable_force_refresh_is_sent(mock: responses.RequestsMock, client: WeChatClient) -> None:
    """`force_refresh=True` is passed through to the stable API."""
    answer(
        mock,
        json={"access_token": TOKEN, "expires_in": 7200},
        match=[matchers.json_params_matcher({"force_refresh": True}, strict_match=False)],
    )
    assert client.fetch(STABLE_APP, force_refresh=True).value == TOKEN


def test_classic_gets_with_query(mock: responses.RequestsMock, client: WeChatClient) -> None:
    """The classic API gets a GET with grant_type, appid and secret as query parameters."""
    mock.add(
        responses.GET,
        CLASSIC_URL,
        json={"access_token": TOKEN, "expires_in": 7200},
        match=[
            matchers.query_param_matcher(
                {"grant_type": "client_credential", "appid": "wxclassic", "secret": SECRET}
            )
        ],
    )
    assert client.fetch(CLASSIC_APP) == FetchedToken(value=TOKEN, expires_in_s=7200)


def test_requests_carry_timeouts(mock: responses.RequestsMock, client: WeChatClient) -> None:
    """Every request is sent with the configured connect and read timeouts."""
    answer(mock, json={"access_token": TOKEN, "expires_in": 7200})
    client.fetch(STABLE_APP)
    assert mock.calls[0].request.req_kwargs["timeout"] == (1.0, 2.0)


# ------------------------------------------------------------------ good answers
@pytest.mark.parametrize("expires_in", [30, 7200, 20.0, 86_400])
def test_expires_in_is_taken_from_the_answer(
    mock: responses.RequestsMock, client: WeChatClient, expires_in: float
) -> None:
    """The lifetime is whatever upstream says, not a fixed 7200."""
    answer(mock, json={"access_token": TOKEN, "expires_in": expires_in})
    assert client.fetch(STABLE_APP).expires_in_s == int(expires_in)


def test_errcode_zero_with_token_is_success(
    mock: responses.RequestsMock, client: WeChatClient
) -> None:
    """An answer with errcode 0 and a token is a success."""
    answer(mock, json={"errcode": 0, "errmsg": "ok", "access_token": TOKEN, "expires_in": 7200})
    assert client.fetch(STABLE_APP).value == TOKEN


def test_token_of_512_chars_is_accepted(mock: responses.RequestsMock, client: WeChatClient) -> None:
    """A 512-character token, WeChat's stated maximum, is accepted."""
    answer(mock, json={"access_token": "T" * 512, "expires_in": 7200})
    assert len(client.fetch(STABLE_APP).value) == 512


def test_fetched_token_repr_hides_value() -> None:
    """`repr()` of a fetched token shows its length and lifetime, never the value."""
    shown = repr(FetchedToken(value=TOKEN, expires_in_s=7200))
    assert TOKEN not in shown
    assert "7200" in shown


# ------------------------------------------------------------------ errcodes
@pytest.mark.parametrize(
    ("errcode", "kind"),
    [
        (-1, FailureKind.TRANSIENT),
        (40013, FailureKind.CONFIG),
        (40125, FailureKind.CONFIG),
        (40164, FailureKind.CONFIG),
        (61004, FailureKind.CONFIG),
        (40243, FailureKind.CONFIG),
        (89503, FailureKind.CONFIG),
        (45009, FailureKind.QUOTA),
        (45011, FailureKind.QUOTA),
        (99999, FailureKind.TRANSIENT),
    ],
)
def test_errcode_is_classified(
    mock: responses.RequestsMock, client: WeChatClient, errcode: int, kind: FailureKind
) -> None:
    """Each errcode maps to how hard to back off, and the error carries the errcode."""
    answer(mock, json={"errcode": errcode, "errmsg": "some reason rid: 1234"})
    error = fetch_error(client)
    assert error.kind is kind
    assert error.errcode == errcode
    assert str(errcode) in str(error)


def test_errcode_on_classic_is_classified(
    mock: responses.RequestsMock, client: WeChatClient
) -> None:
    """The classic API's errcodes are judged the same way."""
    mock.add(responses.GET, CLASSIC_URL, json={"errcode": 40164, "errmsg": "invalid ip"})
    error = fetch_error(client, CLASSIC_APP)
    assert error.kind is FailureKind.CONFIG
    assert error.errcode == 40164


# ------------------------------------------------------------------ garbage answers
GARBAGE: dict[str, dict[str, Any]] = {
    "http 500": {"status": 500, "json": {"access_token": TOKEN, "expires_in": 7200}},
    "http 502 html": {"status": 502, "body": "<html>Bad Gateway</html>"},
    "http 404": {"status": 404, "body": "not found"},
    "html page": {"body": "<!DOCTYPE html><html><body>maintenance</body></html>"},
    "empty body": {"body": ""},
    "truncated json": {"body": json.dumps({"access_token": TOKEN, "expires_in": 7200})[:-9]},
    "invalid utf-8": {"body": b'{"access_token": "\xff\xfe", "expires_in": 7200}'},
    "json array": {"json": [{"access_token": TOKEN, "expires_in": 7200}]},
    "json string": {"json": TOKEN},
    "json null": {"json": None},
    "missing access_token": {"json": {"expires_in": 7200}},
    "null access_token": {"json": {"access_token": None, "expires_in": 7200}},
    "numeric access_token": {"json": {"access_token": 12345, "expires_in": 7200}},
    "empty access_token": {"json": {"access_token": "", "expires_in": 7200}},
    "513-char access_token": {"json": {"access_token": "T" * 513, "expires_in": 7200}},
    "access_token with space": {"json": {"access_token": "AB CD", "expires_in": 7200}},
    "access_token with newline": {"json": {"access_token": TOKEN + "\n", "expires_in": 7200}},
    "missing expires_in": {"json": {"access_token": TOKEN}},
    "zero expires_in": {"json": {"access_token": TOKEN, "expires_in": 0}},
    "negative expires_in": {"json": {"access_token": TOKEN, "expires_in": -7200}},
    "string expires_in": {"json": {"access_token": TOKEN, "expires_in": "7200"}},
    "bool expires_in": {"json": {"access_token": TOKEN, "expires_in": True}},
    "absurd expires_in": {"json": {"access_token": TOKEN, "expires_in": 10**9}},
    "NaN expires_in": {"body": '{"access_token": "' + TOKEN + '", "expires_in": NaN}'},
    "string errcode": {"json": {"errcode": "45009", "errmsg": "quota"}},
    "deep nesting": {"body": "[" * 100_000},
}


@pytest.mark.parametrize("kwargs", GARBAGE.values(), ids=GARBAGE.keys())
def test_garbage_answer_is_transient(
    mock: responses.RequestsMock, client: WeChatClient, kwargs: dict[str, Any]
) -> None:
    """Any answer that is not a usable token is a transient `UpstreamError`, never a crash."""
    answer(mock, **kwargs)
    error = fetch_error(client)
    assert error.kind is FailureKind.TRANSIENT
    assert error.errcode is None
    assert TOKEN not in str(error)
    assert "\n" not in str(error)


def test_http_status_is_named(mock: responses.RequestsMock, client: WeChatClient) -> None:
    """A non-200 answer's message names the status."""
    answer(mock, status=503, body="busy")
    assert "503" in str(fetch_error(client))


# ------------------------------------------------------------------ network failures
URL_WITH_SECRET = f"{CLASSIC_URL}?grant_type=client_credential&appid=wxclassic&secret={SECRET}"
NETWORK_FAILURES = {
    "connect timeout": requests.exceptions.ConnectTimeout(f"timed out: {URL_WITH_SECRET}"),
    "read timeout": requests.exceptions.ReadTimeout(f"read timed out: {URL_WITH_SECRET}"),
    "connection error": requests.exceptions.ConnectionError(
        f"HTTPSConnectionPool: Max retries exceeded with url: {URL_WITH_SECRET}"
    ),
    "ssl error": requests.exceptions.SSLError(f"certificate verify failed: {URL_WITH_SECRET}"),
    "too many redirects": requests.exceptions.TooManyRedirects(f"redirects: {URL_WITH_SECRET}"),
}


@pytest.mark.parametrize("failure", NETWORK_FAILURES.values(), ids=NETWORK_FAILURES.keys())
@pytest.mark.parametrize("app", [CLASSIC_APP, STABLE_APP], ids=["classic", "stable"])
def test_network_failure_is_transient_and_hides_secret(
    mock: responses.RequestsMock,
    client: WeChatClient,
    app: AppConfig,
    failure: requests.RequestException,
) -> None:
    """Timeouts and connection errors are transient; message, repr and traceback hold no secret."""
    url = CLASSIC_URL if app.token_api is TokenApi.CLASSIC else STABLE_URL
    mock.add(responses.GET if app is CLASSIC_APP else responses.POST, url, body=failure)
    error = fetch_error(client, app)
    assert error.kind is FailureKind.TRANSIENT
    assert error.errcode is None
    assert error.__cause__ is None


@pytest.mark.parametrize(
    "failure",
    [
        NETWORK_FAILURES["connection error"],
        NETWORK_FAILURES["connect timeout"],
        NETWORK_FAILURES["read timeout"],
    ],
    ids=["connection error", "connect timeout", "read timeout"],
)
def test_network_failure_keeps_no_request_exception(
    mock: responses.RequestsMock, client: WeChatClient, failure: requests.RequestException
) -> None:
    """The error chains no requests exception, whose text holds the URL with the secret."""
    mock.add(responses.GET, CLASSIC_URL, body=failure)
    error = fetch_error(client, CLASSIC_APP)
    assert error.__context__ is None
    assert error.__cause__ is None


def test_timeout_says_timed_out(mock: responses.RequestsMock, client: WeChatClient) -> None:
    """A timeout is reported as such, so an operator knows it is the network."""
    answer(mock, body=requests.exceptions.ReadTimeout("slow"))
    assert "timed out" in str(fetch_error(client))


def test_errmsg_is_kept_on_one_line(mock: responses.RequestsMock, client: WeChatClient) -> None:
    """An errmsg with line breaks cannot split the error (and the log line) in two."""
    answer(mock, json={"errcode": 40125, "errmsg": "invalid appsecret\nFAKE LOG LINE"})
    error = fetch_error(client)
    assert "\n" not in str(error)
    assert "invalid appsecret" in str(error)


def test_proxy_settings_of_the_environment_are_read_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """HTTPS_PROXY / NO_PROXY are honoured as requests would, read when the client is made
    (not at every call: that was a tenth of the CPU of a fill of 30,000 credentials)."""
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("NO_PROXY", "")
    proxied = WeChatClient("https://api.weixin.qq.com", session=requests.Session())
    assert proxied._session.proxies.get("https") == "http://proxy.internal:3128"
    assert proxied._session.trust_env is False
    monkeypatch.setenv("NO_PROXY", "api.weixin.qq.com")
    direct = WeChatClient("https://api.weixin.qq.com", session=requests.Session())
    assert "https" not in direct._session.proxies
