"""Ticket kinds end to end through Redis, the exchange and consumer_lib (real services):
the producer keeps the access token, an operator's `wxtoken set --kind` provides a ticket
the sandbox issued, and a service's `jssdk_config` signs with it so the sandbox accepts it.
(The producer fetching tickets itself: test_credential_fleet.py.)"""

from __future__ import annotations

import os
import subprocess
import sys

import requests

from consumer_lib import ClientSettings, TokenClient, TokenKind, TokenUnavailable
from consumer_lib.jssdk import jssdk_config
from tests.waiting import wait_for

from .procs import REPO_ROOT
from .stack import Stack


def wxtoken_set_kind(stack: Stack, app_id: str, kind: str, value: str, expires_in_s: int) -> None:
    result = subprocess.run(
        [
            *(sys.executable, "-m", "ops.cli", "set", app_id, "--kind", kind),
            *("--expires-in", str(expires_in_s), "--allow-new-app", "--reason", "ticket e2e"),
        ],
        input=value,
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO_ROOT,
        env={**os.environ, **stack.service_env},
    )
    assert result.returncode == 0, result.stderr


def held_ticket(tokens: TokenClient, app_id: str) -> str | None:
    try:
        return tokens.get_ticket(app_id, "jsapi", timeout=0.2)
    except TokenUnavailable:
        return None


def test_ticket_set_by_kind_reaches_a_client_and_signs_accepted(stack: Stack) -> None:
    """A jsapi ticket stored and published under its own kind reaches get_ticket without
    touching the access token, and the signature made with it is one WeChat accepts."""
    stack.producer()
    env = stack.service_env
    settings = ClientSettings(
        verify_keys=env["WXTOKEN_VERIFY_KEYS"],
        redis_url=env["WXTOKEN_REDIS_URL"],
        amqp_url=env["WXTOKEN_AMQP_URL"],
        exchange=env["WXTOKEN_EXCHANGE"],
        key_prefix=env["WXTOKEN_KEY_PREFIX"],
    )
    app_id = stack.app_ids[0]
    with TokenClient(settings) as tokens:
        assert tokens.wait_connected(10), "client never subscribed"
        token = tokens.get_token(app_id, timeout=20)
        answer = requests.get(
            f"{stack.sandbox.base_url}/cgi-bin/ticket/getticket",
            params={"access_token": token, "type": "jsapi"},
            timeout=5,
        ).json()
        assert answer["errcode"] == 0, answer
        wxtoken_set_kind(stack, app_id, "jsapi", answer["ticket"], int(answer["expires_in"]))
        wait_for(
            lambda: held_ticket(tokens, app_id) == answer["ticket"],
            timeout_s=20,
            message="the client holding the ticket",
        )
        held = tokens.get(app_id, kind=TokenKind.JSAPI_TICKET)
        assert held.kind is TokenKind.JSAPI_TICKET
        assert tokens.get(app_id).kind is TokenKind.ACCESS_TOKEN  # untouched
        url = "https://h5.example.com/pay?order=42#/confirm"
        config = jssdk_config(tokens, app_id, url)
        accepted = stack.sandbox.state.verify_signature(
            app_id,
            "jsapi",
            "https://h5.example.com/pay?order=42",
            str(config["nonceStr"]),
            str(config["timestamp"]),
            str(config["signature"]),
        )
        print(f"\n[tickets] {app_id} jsapi v{held.version} signature accepted: {accepted}")
        assert accepted
    assert stack.sandbox.state.calls("getticket/jsapi", app_id) == 1
