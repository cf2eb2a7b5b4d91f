"""The whole path with real processes: sandbox WeChat → producer → Redis + RabbitMQ →
subscriber processes that use each token for a WeChat call."""

from __future__ import annotations

import os
import subprocess
import sys

import pika
import requests

from consumer_lib import TokenSource
from consumer_lib.wire.update import TokenUpdate
from producer.publishing import publish_update
from tests.waiting import wait_for

from .procs import REPO_ROOT, wait_line
from .stack import Stack


def stable_token_from_sandbox(stack: Stack, app_id: str) -> tuple[str, int]:
    """A token obtained 'elsewhere': the sandbox's stable API, independent of classic."""
    answer = requests.post(
        f"{stack.sandbox.base_url}/cgi-bin/stable_token",
        json={"grant_type": "client_credential", "appid": app_id, "secret": stack.apps[app_id]},
        timeout=5,
    ).json()
    return answer["access_token"], int(answer["expires_in"])


def wxtoken_set(stack: Stack, app_id: str, token: str, expires_in_s: int) -> str:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "ops.cli",
            "set",
            app_id,
            "--expires-in",
            str(expires_in_s),
            "--reason",
            "e2e override",
        ],
        input=token,
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO_ROOT,
        env={**os.environ, **stack.service_env},
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_producer_token_reaches_two_subscriber_processes(stack: Stack) -> None:
    """Two subscriber processes both get each app's token, and WeChat accepts every one."""
    producer = stack.producer()
    subscribers = [stack.subscriber(), stack.subscriber()]
    for subscriber in subscribers:
        subscriber.wait_ready()
    for subscriber in subscribers:
        for app_id in stack.app_ids:
            subscriber.wait_calls(app_id, 5)
    for app_id in stack.app_ids:
        stored = stack.snapshot(app_id)
        assert stored is not None
        assert stored.source is TokenSource.REFRESH
        assert stack.issued(app_id) == 1
    for subscriber in subscribers:
        assert subscriber.bad_calls() == []
    assert producer.terminate() == 0


def test_override_reaches_every_subscriber(stack: Stack) -> None:
    """`wxtoken set` with a token obtained elsewhere replaces the token in both subscribers."""
    stack.producer()
    subscribers = [stack.subscriber(), stack.subscriber()]
    app_id = stack.app_ids[0]
    for subscriber in subscribers:
        subscriber.wait_ready()
        subscriber.wait_calls(app_id, 1)
    token, expires_in_s = stable_token_from_sandbox(stack, app_id)
    wxtoken_set(stack, app_id, token, expires_in_s)
    stored = stack.snapshot(app_id)
    assert stored is not None
    assert stored.source is TokenSource.OVERRIDE
    assert stored.value == token
    for subscriber in subscribers:
        wait_for(
            lambda s=subscriber: any(
                e["version"] == stored.version and e["source"] == "override"
                for e in s.events("update")
            ),
            timeout_s=10,
            message="override reaching a subscriber",
        )
        subscriber.wait_calls(app_id, 3, after_version=stored.version - 1)
        assert subscriber.bad_calls() == []


def test_late_subscriber_gets_the_token_from_redis(stack: Stack) -> None:
    """A subscriber started after the producer stopped publishing still gets the token."""
    producer = stack.producer()
    app_id = stack.app_ids[0]
    wait_for(lambda: stack.snapshot(app_id), timeout_s=20, message="token in Redis")
    assert producer.terminate() == 0
    late = stack.subscriber()
    late.wait_ready()
    late.wait_calls(app_id, 3)
    assert late.bad_calls() == []
    assert {c["version"] for c in late.calls(app_id)} == {stack.snapshot(app_id).version}


def test_restarted_producer_adopts_the_token_without_fetching(stack: Stack) -> None:
    """Killing and restarting the producer costs no upstream call: Redis's token is adopted."""
    first = stack.producer()
    for app_id in stack.app_ids:
        wait_for(lambda a=app_id: stack.snapshot(a), timeout_s=20, message="token in Redis")
    first.kill()
    issued_before = {app_id: stack.issued(app_id) for app_id in stack.app_ids}
    second = stack.producer()
    for app_id in stack.app_ids:
        wait_line(
            second,
            lambda line, a=app_id: f"{a}: adopting" in line,
            timeout_s=20,
            message=f"restarted producer adopting {app_id}",
        )
    subscriber = stack.subscriber()
    subscriber.wait_ready()
    for app_id in stack.app_ids:
        subscriber.wait_calls(app_id, 3)
    assert {app_id: stack.issued(app_id) for app_id in stack.app_ids} == issued_before
    assert subscriber.bad_calls() == []
    assert second.terminate() == 0


def test_upstream_busy_then_success(stack: Stack) -> None:
    """Two `-1 system busy` answers are retried, then the token flows; nothing crashes."""
    app_id = stack.app_ids[0]
    requests.post(
        f"{stack.sandbox.base_url}/sandbox/fault",
        json={"mode": "busy", "count": 2, "apps": [app_id]},
        timeout=5,
    )
    producer = stack.producer()
    subscriber = stack.subscriber()
    subscriber.wait_ready()
    subscriber.wait_calls(app_id, 3)
    stats = stack.sandbox.state.stats()["fetches"]
    assert isinstance(stats, dict)
    assert stats[app_id]["rejected"] == 2
    assert stack.issued(app_id) == 1
    assert subscriber.bad_calls() == []
    assert "errcode -1" in producer.stderr_text()
    assert producer.terminate() == 0


def test_subscriber_keeps_the_newer_version(stack: Stack) -> None:
    """An older version arriving on the exchange after a newer one is dropped."""
    stack.producer()
    subscriber = stack.subscriber()
    subscriber.wait_ready()
    app_id = stack.app_ids[0]
    subscriber.wait_calls(app_id, 1)
    current = stack.snapshot(app_id)
    assert current is not None
    older = TokenUpdate(
        app_id=app_id,
        value="stale-token-from-a-confused-publisher",
        issued_at=current.issued_at,
        expires_at=current.expires_at,
        version=current.version - 1,
        source=TokenSource.OVERRIDE,
        producer_id="test",
    )
    connection = pika.BlockingConnection(pika.URLParameters(stack.service_env["WXTOKEN_AMQP_URL"]))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        publish_update(
            channel,
            stack.service_env["WXTOKEN_EXCHANGE"],
            older,
            now_s=current.issued_at,
            sender="test",
        )
    finally:
        connection.close()
    calls_before = len(subscriber.calls(app_id))
    subscriber.wait_calls(app_id, calls_before + 10)
    assert all(c["version"] >= current.version for c in subscriber.calls(app_id))
    assert subscriber.bad_calls() == []
