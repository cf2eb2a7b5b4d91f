"""The SDK drop-ins against the sandbox WeChat and a real producer: a call that hits a
revoked token recovers through the producer (report, pushed successor, one retry), and
the SDK never fetches a token itself."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import requests

from consumer_lib import ClientSettings, TokenClient
from consumer_lib.dropins.httpx_auth import WeChatTokenHttpxAuth
from consumer_lib.dropins.requests_auth import WeChatTokenAuth
from consumer_lib.dropins.wechatpy_client import TokenWeChatClient
from tests.waiting import wait_for

from .stack import Stack


@pytest.fixture
def tokens(stack: Stack) -> Iterator[TokenClient]:
    stack.producer()
    env = stack.service_env
    settings = ClientSettings(
        redis_url=env["WXTOKEN_REDIS_URL"],
        amqp_url=env["WXTOKEN_AMQP_URL"],
        exchange=env["WXTOKEN_EXCHANGE"],
        key_prefix=env["WXTOKEN_KEY_PREFIX"],
        verify_keys=env["WXTOKEN_VERIFY_KEYS"],
    )
    client = TokenClient(settings).start()
    assert client.wait_connected(20)
    wait_for(lambda: stack.snapshot(stack.app_ids[0]), timeout_s=30, message="a stored token")
    client.get_token(stack.app_ids[0], timeout=20)
    yield client
    client.close()


def _revoke(stack: Stack, token: str) -> None:
    """WeChat invalidates the token now (as when another server fetched one)."""
    state = stack.sandbox.state
    owner = state.owner_of(token)
    assert owner is not None, "a token the sandbox issued"
    assert state.invalidate(owner), "it was the app's live token"
    assert not state.is_valid(token)


def _fetched(stack: Stack, app_id: str) -> int:
    return stack.issued(app_id)


def test_wechatpy_recovers_through_the_producer(stack: Stack, tokens: TokenClient) -> None:
    """getcallbackip with a revoked token: reported, successor pushed, retried, answered."""
    app_id = stack.app_ids[0]
    client = TokenWeChatClient(app_id, tokens, api_base_url=stack.sandbox.base_url + "/cgi-bin/")
    assert client.misc.get_wechat_ips() == ["127.0.0.1"]
    revoked = tokens.get_token(app_id)
    before = _fetched(stack, app_id)
    _revoke(stack, revoked)
    assert client.misc.get_wechat_ips() == ["127.0.0.1"]
    assert tokens.get_token(app_id) != revoked
    assert _fetched(stack, app_id) > before  # the producer fetched the successor
    assert client.session.get(client.access_token_key) is None  # wechatpy stored none


def test_requests_auth_retries_once_with_the_successor(stack: Stack, tokens: TokenClient) -> None:
    """A requests call with a revoked token is answered after one report and one retry."""
    app_id = stack.app_ids[0]
    auth = WeChatTokenAuth(tokens, app_id)
    url = stack.sandbox.base_url + "/cgi-bin/getcallbackip"
    revoked = tokens.get_token(app_id)
    _revoke(stack, revoked)
    answer = requests.get(url, params={"access_token": "stale-param"}, auth=auth, timeout=30)
    assert answer.json() == {"ip_list": ["127.0.0.1"]}
    assert len(answer.history) == 1
    assert revoked not in answer.request.url  # type: ignore[operator]
    assert "stale-param" not in answer.request.url  # type: ignore[operator]


def test_httpx_auth_retries_once_with_the_successor(stack: Stack, tokens: TokenClient) -> None:
    """The same with httpx."""
    app_id = stack.app_ids[1]
    tokens.get_token(app_id, timeout=20)
    revoked = tokens.get_token(app_id)
    _revoke(stack, revoked)
    answer = httpx.get(
        stack.sandbox.base_url + "/cgi-bin/getcallbackip",
        auth=WeChatTokenHttpxAuth(tokens, app_id),
        timeout=30,
    )
    assert answer.json() == {"ip_list": ["127.0.0.1"]}
    assert answer.request.url.params["access_token"] != revoked


def test_a_token_the_producer_cannot_replace_is_returned_as_rejected(
    stack: Stack, tokens: TokenClient, tmp_path: Path
) -> None:
    """With no successor in time the caller gets WeChat's 40001, after one report."""
    app_id = stack.app_ids[0]
    for child in stack.children:
        child.kill()  # no producer: nobody can replace it
    revoked = tokens.get_token(app_id)
    _revoke(stack, revoked)
    auth = WeChatTokenAuth(tokens, app_id, successor_timeout_s=0.5)
    answer = requests.get(stack.sandbox.base_url + "/cgi-bin/getcallbackip", auth=auth, timeout=30)
    assert answer.json()["errcode"] == 40001
