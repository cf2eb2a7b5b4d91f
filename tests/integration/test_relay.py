"""A "test environment" relaying from "production": a production gateway in front of a
producer pair, Redis, RabbitMQ and the sandbox; a relay gateway in front of it (through a
TCP proxy the test cuts), with no Redis or broker of its own; a service's `TokenClient`
over HTTP on the relay. Every token reaches the service through a leader kill; while
production is cut the relay serves what it holds and never an expired token; it catches up
once production is back."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx

from consumer_lib import TokenClient, TokenUpdate
from consumer_lib.settings import GatewayClientSettings
from tests.waiting import wait_for

from .gateway_stack import (
    NOWHERE_AMQP,
    NOWHERE_REDIS,
    start_gateway,
    start_relay,
    wait_ready,
)
from .stack import Stack
from .tcp_proxy import proxy_to
from .test_failover import lease_holder


def test_relay_through_a_leader_kill_and_a_production_cut(stack: Stack, tmp_path: Path) -> None:
    producers = {
        pid: stack.producer(WXTOKEN_PRODUCER_ID=pid, WXTOKEN_LEASE_TTL_S="4")
        for pid in ("p0", "p1")
    }
    for app_id in stack.app_ids:
        wait_for(lambda a=app_id: stack.snapshot(a), timeout_s=30, message=f"{app_id} stored")
    production = start_gateway(stack, tmp_path, WXTOKEN_GATEWAY_STREAM_HEARTBEAT_S="0.5")
    wait_ready(production)
    app_id = stack.app_ids[0]
    with proxy_to("127.0.0.1", int(production.base_url.rsplit(":", 1)[1])) as proxy:
        # The relay's key upstream may read only (no report scope): a read-only relay.
        relay = start_relay(
            stack, tmp_path, f"http://127.0.0.1:{proxy.port}", production.keys["reader"]
        )
        wait_ready(relay)
        pushed: list[tuple[TokenUpdate, bool]] = []  # each update, and WeChat's view of it
        lock = threading.Lock()
        service = TokenClient.over_http(
            GatewayClientSettings(
                gateway_url=relay.base_url,
                gateway_api_key=relay.keys["reader"],
                verify_keys=stack.service_env["WXTOKEN_VERIFY_KEYS"],
                redis_url=NOWHERE_REDIS,
                amqp_url=NOWHERE_AMQP,
                reconnect_max_s=0.5,
            )
        )

        def on_update(update: TokenUpdate) -> None:
            if update.app_id == app_id:
                with lock:
                    pushed.append((update, stack.sandbox.state.is_valid(update.value)))

        service.on_update(on_update)
        with service:
            assert service.get_token(app_id, timeout=20)
            # A leader kill in production: the standby takes over, the next token arrives.
            leader = wait_for(lambda: lease_holder(stack), timeout_s=20, message="a leader")
            before = service.get(app_id, timeout=0).version
            producers.pop(leader).kill()
            wait_for(
                lambda: service.get(app_id, timeout=0).version > before,
                timeout_s=60,
                message="a token refreshed by the standby, pushed through the relay",
            )
            # Production cut: the relay serves what it holds until expiry, never past.
            proxy.cut()
            cut_at = time.time()
            wait_for(
                lambda: (
                    httpx.get(relay.base_url + "/readyz", timeout=5).json().get("upstream")
                    == "unreachable"
                ),
                timeout_s=20,
                message="the relay saying production is unreachable",
            )
            expired_served = 0
            answers = 0

            def relay_answers_503() -> bool:
                nonlocal expired_served, answers
                asked_at = time.time()
                answer = relay.get(f"/v1/apps/{app_id}/access_token")
                if answer.status_code == 200:
                    answers += 1
                    if answer.json()["expires_at"] <= asked_at:
                        expired_served += 1
                    return False
                assert answer.status_code == 503, answer.text
                return True

            wait_for(relay_answers_503, timeout_s=60, interval_s=0.1, message="expiry")
            assert expired_served == 0
            assert answers > 0
            # Production back: the relay catches up, the service gets the current token.
            proxy.restore()
            restored_at = time.monotonic()
            wait_for(
                lambda: (
                    (current := stack.snapshot(app_id)) is not None
                    and relay.get(f"/v1/apps/{app_id}/access_token").status_code == 200
                    and service.get(app_id, timeout=0).version >= current.version
                ),
                timeout_s=30,
                message="the relay and its service back in sync",
            )
            caught_up_s = time.monotonic() - restored_at
            # Reports go upstream only with the report scope, which this relay's key lacks.
            token = service.get_token(app_id, timeout=0)
            report = relay.post(
                f"/v1/apps/{app_id}/access_token:report",
                role="reporter",
                json={"access_token": token},
            )
            assert report.status_code == 202
            assert report.json()["reported"] is False
            override = relay.post(
                f"/v1/apps/{app_id}/access_token",
                role="operator",
                json={"access_token": "TOKEN-" + "z" * 30, "expires_in": 600},
            )
            assert override.status_code == 501
        with lock:
            assert pushed
            assert all(valid for _, valid in pushed), pushed
            versions = [u.version for u, _ in pushed]
        assert versions == sorted(set(versions))
        print(
            f"\n[relay] production cut {time.time() - cut_at:.0f} s in all, relay answers "
            f"during the cut {answers}, expired served {expired_served}, back in sync "
            f"{caught_up_s:.2f} s after restore, {len(versions)} versions pushed"
        )
