"""`TokenClient` over HTTP (`WXTOKEN_GATEWAY_URL`): a real gateway in front of a real
producer, Redis, RabbitMQ and the sandbox; the client has neither Redis nor broker URLs."""

from __future__ import annotations

from pathlib import Path

from consumer_lib import TokenClient
from consumer_lib.settings import GatewayClientSettings
from consumer_lib.wire.signing import generate_keypair
from tests.waiting import wait_for

from .gateway_stack import start_gateway, wait_ready
from .stack import Stack


def _http_client(url: str, key: str, verify_keys: str) -> TokenClient:
    return TokenClient.over_http(
        GatewayClientSettings(
            gateway_url=url,
            gateway_api_key=key,
            verify_keys=verify_keys,
            # Nothing listens here: the client must never need them.
            redis_url="redis://127.0.0.1:1/0",
            amqp_url="amqp://guest:guest@127.0.0.1:1/%2F",
            reconnect_max_s=0.5,
        )
    )


def test_http_client_holds_gets_pushed_reports_and_checks_signatures(
    stack: Stack, tmp_path: Path
) -> None:
    stack.producer()
    for app_id in stack.app_ids:
        wait_for(lambda a=app_id: stack.snapshot(a), timeout_s=30, message=f"{app_id} stored")
    gateway = start_gateway(stack, tmp_path, WXTOKEN_GATEWAY_STREAM_HEARTBEAT_S="0.5")
    wait_ready(gateway)
    app_id = stack.app_ids[0]
    verify_keys = stack.service_env["WXTOKEN_VERIFY_KEYS"]
    with _http_client(gateway.base_url, gateway.keys["reporter"], verify_keys) as client:
        first = client.get(app_id, timeout=20)
        assert stack.sandbox.state.is_valid(first.value)
        assert client.get_token(stack.app_ids[1], timeout=20)  # every app the key may use
        # The next refresh is pushed (30 s sandbox tokens).
        wait_for(
            lambda: client.get(app_id, timeout=0).version > first.version,
            timeout_s=40,
            message="the next token pushed over HTTP",
        )
        second = client.get(app_id, timeout=0)
        assert stack.sandbox.state.is_valid(second.value)
        second = client.get(app_id, timeout=0)  # the newest: a refresh may have come meanwhile
        # WeChat refuses it: the report goes through the gateway, the producer checks and
        # refreshes, and the replacement is pushed.
        assert stack.sandbox.state.invalidate(app_id)
        assert client.report_invalid(app_id, second.value, reason="40001 in the test")
        wait_for(
            lambda: client.get(app_id, timeout=0).version > second.version,
            timeout_s=20,
            message="the reported token replaced",
        )
        assert stack.sandbox.state.is_valid(client.get_token(app_id, timeout=0))
    # A client trusting another key takes nothing the gateway streams: the gateway cannot
    # hand it a token the producer did not sign for it.
    _, stranger_public = generate_keypair(tmp_path / "stranger")
    with _http_client(gateway.base_url, gateway.keys["reader"], str(stranger_public)) as doubter:
        wait_for(lambda: doubter.stats.rejected >= 2, timeout_s=20, message="rejections")
        assert doubter.held_body(app_id) is None
