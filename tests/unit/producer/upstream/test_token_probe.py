"""The check before a request-caused refresh: the real prober against every answer."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests
import responses
from pydantic import SecretStr

from consumer_lib import Platform
from producer.apps import AppConfig, TokenApi
from producer.ports import TokenProber
from producer.upstream.errors import MAX_ANSWER_BYTES
from producer.upstream.routing import Upstream
from producer.upstream.token_probe import PROBE_TTL_S, ProbeVerdict, TokenProbe
from producer.upstream.wechat import WeChatClient
from producer.upstream.wecom import WecomClient
from tests.conftest import FakeClock

WX = "https://api.weixin.qq.com"
QY = "https://qyapi.weixin.qq.com"
TOKEN = "ACCESS_TOKEN_" + "y" * 100
OFFICIAL = AppConfig(app_id="wxa", secret=SecretStr("s" * 32), token_api=TokenApi.CLASSIC)
AGENT = AppConfig(
    app_id="hr",
    secret=SecretStr("s" * 32),
    platform=Platform.WECOM,
    token_api=TokenApi.WECOM,
    corp_id="ww_corp",
    agent_id="1000002",
)
OK = {"json": {"ip_list": ["101.226.103.0/25"]}}


@pytest.fixture
def mock() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        yield rsps


@pytest.fixture
def probe(clock: FakeClock) -> TokenProbe:
    upstream = Upstream(WeChatClient(WX), WecomClient(QY))
    assert isinstance(upstream, TokenProber)  # the service injects it as the port
    return TokenProbe(upstream, clock=clock)


@pytest.mark.parametrize(
    ("reply", "verdict"),
    [
        (OK, ProbeVerdict.ACCEPTED),
        ({"json": {"errcode": 0, "errmsg": "ok", "ip_list": []}}, ProbeVerdict.ACCEPTED),
        ({"json": {"errcode": 40001, "errmsg": "invalid credential"}}, ProbeVerdict.REFUSED),
        ({"json": {"errcode": 40014, "errmsg": "invalid access_token"}}, ProbeVerdict.REFUSED),
        ({"json": {"errcode": 42001, "errmsg": "access_token expired"}}, ProbeVerdict.REFUSED),
        ({"json": {"errcode": 40164, "errmsg": "invalid ip 1.2.3.4"}}, ProbeVerdict.UNKNOWN),
        ({"json": {"errcode": -1, "errmsg": "system busy"}}, ProbeVerdict.UNKNOWN),
        ({"json": {"errcode": 45009, "errmsg": "quota"}}, ProbeVerdict.UNKNOWN),
        ({"json": {"errcode": "0"}}, ProbeVerdict.UNKNOWN),
        ({"json": {"errcode": True}}, ProbeVerdict.UNKNOWN),
        ({"json": {}}, ProbeVerdict.UNKNOWN),
        ({"json": {"ip_list": "1.2.3.4"}}, ProbeVerdict.UNKNOWN),
        ({"json": [1, 2]}, ProbeVerdict.UNKNOWN),
        ({"body": "<html>gateway</html>"}, ProbeVerdict.UNKNOWN),
        ({"body": b"\xff\xfe\x00garbage"}, ProbeVerdict.UNKNOWN),
        ({"body": "x" * (MAX_ANSWER_BYTES + 10)}, ProbeVerdict.UNKNOWN),
        ({"status": 502, "json": {"ip_list": []}}, ProbeVerdict.UNKNOWN),
        ({"body": requests.ConnectionError("refused")}, ProbeVerdict.UNKNOWN),
        ({"body": requests.Timeout("slow")}, ProbeVerdict.UNKNOWN),
    ],
)
def test_wechat_answers(
    mock: responses.RequestsMock, probe: TokenProbe, reply: dict[str, Any], verdict: ProbeVerdict
) -> None:
    """Only errcode 0 with an ip_list is 'accepted', only a token errcode is 'refused';
    everything else (IP, busy, quota, garbage, no answer) says nothing: 'unknown'."""
    mock.get(f"{WX}/cgi-bin/getcallbackip", **reply)
    assert probe.check(OFFICIAL, TOKEN) is verdict


@pytest.mark.parametrize(
    ("reply", "verdict"),
    [
        (OK, ProbeVerdict.ACCEPTED),
        ({"json": {"errcode": 42001, "errmsg": "expired"}}, ProbeVerdict.REFUSED),
        ({"json": {"errcode": 40014, "errmsg": "invalid"}}, ProbeVerdict.REFUSED),
        ({"json": {"errcode": 60020, "errmsg": "not allow to access from your ip"}}, None),
        ({"body": "garbage"}, None),
    ],
)
def test_wecom_apps_are_checked_on_the_wecom_base_url(
    mock: responses.RequestsMock,
    probe: TokenProbe,
    reply: dict[str, Any],
    verdict: ProbeVerdict | None,
) -> None:
    """A WeCom app's token is checked on WeCom's API, never sent to WeChat's."""
    mock.get(f"{QY}/cgi-bin/getcallbackip", **reply)
    assert probe.check(AGENT, TOKEN) is (verdict or ProbeVerdict.UNKNOWN)


def test_the_token_travels_only_to_its_platform(
    mock: responses.RequestsMock, probe: TokenProbe
) -> None:
    """The check carries the token in access_token, to the app's own base URL."""
    call = mock.get(f"{WX}/cgi-bin/getcallbackip", **OK)
    probe.check(OFFICIAL, TOKEN)
    assert call.calls[0].request.params == {"access_token": TOKEN}


def test_verdicts_are_cached_per_token_for_a_minute(
    mock: responses.RequestsMock, probe: TokenProbe, clock: FakeClock
) -> None:
    """A flood about one token costs one probe per minute; another token its own."""
    call = mock.get(f"{WX}/cgi-bin/getcallbackip", **OK)
    for _ in range(500):
        assert probe.check(OFFICIAL, TOKEN) is ProbeVerdict.ACCEPTED
        clock.advance(0.1)  # 50 s in all
    assert call.call_count == 1
    probe.check(OFFICIAL, TOKEN + "other")
    assert call.call_count == 2
    clock.advance(PROBE_TTL_S)
    probe.check(OFFICIAL, TOKEN)
    assert call.call_count == 3
    assert probe.probes == 3


def test_an_unknown_verdict_is_cached_too(mock: responses.RequestsMock, probe: TokenProbe) -> None:
    """An upstream that does not answer is not asked again by every report."""
    call = mock.get(f"{WX}/cgi-bin/getcallbackip", body=requests.ConnectionError("down"))
    for _ in range(20):
        assert probe.check(OFFICIAL, TOKEN) is ProbeVerdict.UNKNOWN
    assert call.call_count == 1


def test_a_failing_port_is_unknown_and_logged(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A prober that raises something unexpected does not stop the refresher."""

    class Broken:
        def check_token(self, app: AppConfig, access_token: str) -> Any:
            raise RuntimeError("bug")

    assert TokenProbe(Broken(), clock=clock).check(OFFICIAL, TOKEN) is ProbeVerdict.UNKNOWN
    assert "token check failed" in caplog.text
    assert TOKEN not in caplog.text
