"""The upstream clients against the sandbox over real local HTTP: both speak WeChat alike."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests
from pydantic import SecretStr

from consumer_lib import Platform, TokenKind
from consumer_lib.jssdk import jssdk_config
from ops.sandbox import Fault, SandboxConfig, SandboxServer, WecomAgent
from producer.apps import AppConfig, TokenApi
from producer.upstream.errcodes import FailureKind
from producer.upstream.errors import UpstreamError
from producer.upstream.routing import Upstream
from producer.upstream.wechat import TokenCheck, WeChatClient
from producer.upstream.wecom import WecomClient

AGENTS = (WecomAgent("ww_corp", "1000002", "agent-2"), WecomAgent("ww_corp", "1000003", "agent-3"))
CLASSIC = AppConfig(
    app_id="wx_app_a",
    secret=SecretStr("secret-a"),
    token_api=TokenApi.CLASSIC,
    tickets=(TokenKind.JSAPI_TICKET, TokenKind.WX_CARD_TICKET),
)


def agent_app(agent: WecomAgent) -> AppConfig:
    return AppConfig(
        app_id=f"agent-{agent.agent_id}",
        secret=SecretStr(agent.secret),
        platform=Platform.WECOM,
        token_api=TokenApi.WECOM,
        corp_id=agent.corp_id,
        agent_id=agent.agent_id,
        tickets=(TokenKind.CORP_JSAPI_TICKET, TokenKind.AGENT_CONFIG_TICKET),
    )


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    config = SandboxConfig(apps={"wx_app_a": "secret-a"}, overlap_s=0, wecom_agents=AGENTS)
    with SandboxServer(config) as server:
        yield server


@pytest.fixture
def upstream(sandbox: SandboxServer) -> Iterator[Upstream]:
    with requests.Session() as session:
        session.trust_env = False
        yield Upstream(
            WeChatClient(sandbox.base_url, session=session),
            WecomClient(sandbox.base_url, session=session),
        )


def test_ticket_with_a_superseded_token_is_token_invalid_then_works(
    sandbox: SandboxServer, upstream: Upstream
) -> None:
    """A ticket fetch with a replaced token is TOKEN_INVALID; with the new token it works,
    and the sandbox accepts the ticket and its JS-SDK signature."""
    old = upstream.fetch(CLASSIC).value
    new = upstream.fetch(CLASSIC).value  # overlap 0: the old one is dead at once
    with pytest.raises(UpstreamError) as info:
        upstream.fetch_ticket(CLASSIC, TokenKind.JSAPI_TICKET, old)
    assert info.value.kind is FailureKind.TOKEN_INVALID
    assert upstream.check_token(CLASSIC, old) is TokenCheck.REFUSED
    assert upstream.check_token(CLASSIC, new) is TokenCheck.ACCEPTED
    ticket = upstream.fetch_ticket(CLASSIC, TokenKind.JSAPI_TICKET, new)
    assert sandbox.state.ticket_status(ticket.value)["valid"] is True

    class Source:
        def get_ticket(self, app_id: str, ticket_name: str, timeout: float = 5.0) -> str:
            assert (app_id, ticket_name) == ("wx_app_a", "jsapi")
            return ticket.value

    url = "https://h5.example.com/page?id=7#/tab"
    config = jssdk_config(Source(), "wx_app_a", url)
    assert sandbox.state.verify_signature(
        "wx_app_a",
        "jsapi",
        "https://h5.example.com/page?id=7",
        str(config["nonceStr"]),
        str(config["timestamp"]),
        str(config["signature"]),
    )


def test_wecom_agents_get_their_own_tokens_and_tickets(
    sandbox: SandboxServer, upstream: Upstream
) -> None:
    """Each agent's token is its own, repeated within validity; tickets are counted per agent."""
    apps = [agent_app(agent) for agent in AGENTS]
    first = [upstream.fetch(app) for app in apps]
    assert first[0].value != first[1].value
    assert upstream.fetch(apps[0]).value == first[0].value  # WeCom: the same token back
    for app, token in zip(apps, first, strict=True):
        for kind in app.tickets:
            upstream.fetch_ticket(app, kind, token.value)
    assert sandbox.state.calls("wecom_ticket/agent_config", "ww_corp/1000003") == 1
    assert sandbox.state.stats()["wecom_issued"] == {"ww_corp/1000002": 1, "ww_corp/1000003": 1}


def test_ip_fault_carries_the_callers_address(sandbox: SandboxServer, upstream: Upstream) -> None:
    """The sandbox's 40164 names 127.0.0.1; the client extracts it for the operator."""
    sandbox.state.set_fault(Fault("ip", count=1))
    with pytest.raises(UpstreamError) as info:
        upstream.fetch(CLASSIC)
    assert (info.value.errcode, info.value.caller_ip) == (40164, "127.0.0.1")


def test_clear_quota_round_trip(upstream: Upstream) -> None:
    """clear_quota/v2 with the app's secret succeeds against the sandbox."""
    upstream.clear_quota(CLASSIC)
