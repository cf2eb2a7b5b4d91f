"""The producer under trouble: a lost broker, a misconfigured app, a hung upstream, signals."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import requests

from tests.waiting import wait_for

from .procs import wait_line
from .stack import make_stack
from .tcp_proxy import proxy_to


def via_proxy(url: str, port: int) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host))


def test_broker_lost_producer_keeps_refreshing_into_redis(
    tmp_path: Path, service_env: dict[str, str]
) -> None:
    """With its broker connection cut the producer still refreshes into Redis, subscribers
    converge from Redis before their token expires, and publishing resumes on restore."""
    # 20 s tokens: the subscriber looks in Redis in the last 2 s (a tenth) of its token's
    # life, a window a busy machine's scheduling cannot miss.
    stack = make_stack(tmp_path, service_env, expires_in_s=20, overlap_s=10, app_count=1)
    amqp = urlsplit(service_env["WXTOKEN_AMQP_URL"])
    try:
        with proxy_to(amqp.hostname or "127.0.0.1", amqp.port or 5672) as proxy:
            producer = stack.producer(
                WXTOKEN_AMQP_URL=via_proxy(service_env["WXTOKEN_AMQP_URL"], proxy.port)
            )
            app_id = stack.app_ids[0]
            subscriber = stack.subscriber()
            subscriber.wait_ready()
            subscriber.wait_calls(app_id, 3)
            first = stack.snapshot(app_id)
            assert first is not None

            proxy.cut()
            wait_for(
                lambda: stack.snapshot(app_id).version > first.version,
                timeout_s=30,
                message="a refresh written to Redis while the broker is cut",
            )
            # The subscriber, still connected itself, finds the successor in Redis.
            subscriber.wait_calls(app_id, 3, after_version=first.version, timeout_s=15)
            switched_at = min(
                c["t"] for c in subscriber.calls(app_id) if c["version"] > first.version
            )
            assert switched_at < first.expires_at, "successor used only after expiry"

            proxy.restore()
            wait_line(
                producer,
                lambda line: "broker available again" in line,
                timeout_s=30,
                message="the producer reconnecting to the broker",
            )

            def published_after_reconnect() -> bool:
                lines = producer.stderr_text().splitlines()
                back = max(i for i, line in enumerate(lines) if "available again" in line)
                return any(f"published {app_id}/" in line for line in lines[back:])

            wait_for(
                published_after_reconnect,
                timeout_s=30,
                message="publishing after the broker is back",
            )
            assert subscriber.bad_calls() == []
            assert subscriber.events("unavailable") == []
            assert producer.terminate() == 0
    finally:
        stack.close()


def test_a_misconfigured_app_never_delays_the_others(
    tmp_path: Path, service_env: dict[str, str]
) -> None:
    """An app with a wrong secret logs one clear ERROR line; the other app's tokens flow."""
    stack = make_stack(tmp_path, service_env)
    try:
        bad_app, good_app = stack.app_ids
        producer = stack.producer(E2E_SECRET_1="not-the-secret")
        subscriber = stack.subscriber()
        subscriber.wait_ready()
        subscriber.wait_calls(good_app, 5)
        wait_line(
            producer,
            lambda line: "ERROR" in line and bad_app in line,
            timeout_s=30,
            message="an ERROR line about the misconfigured app",
        )
        errors = [
            line
            for line in producer.stderr_text().splitlines()
            if "ERROR" in line and bad_app in line
        ]
        assert len(errors) == 1
        assert "40125" in errors[0]
        assert "invalid appsecret" in errors[0]
        assert "not-the-secret" not in producer.stderr_text()
        assert stack.snapshot(bad_app) is None
        assert producer.terminate() == 0
    finally:
        stack.close()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_producer_stops_promptly_even_with_upstream_hanging(
    tmp_path: Path,
    service_env: dict[str, str],
    signum: signal.Signals,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """SIGTERM and SIGINT stop the producer cleanly mid-fetch, without waiting for the
    upstream's 60 s hang (how soon is printed)."""
    stack = make_stack(tmp_path, service_env)
    try:
        requests.post(
            f"{stack.sandbox.base_url}/sandbox/fault",
            json={"mode": "timeout", "delay_s": 60},
            timeout=5,
        )
        producer = stack.producer()
        wait_line(
            producer,
            lambda line: "publisher connected" in line,
            timeout_s=20,
            message="the producer running",
        )
        sent = time.monotonic()
        producer.proc.send_signal(signum)
        code = producer.proc.wait(30)  # far less than the hang: it did not wait for it
        took_s = time.monotonic() - sent
        with capsys.disabled():
            print(f"\n[stop] {signum.name} stopped the producer mid-fetch in {took_s:.2f} s")
        assert code == 0
        assert "producer stopped" in producer.stderr_text()
    finally:
        stack.close()
