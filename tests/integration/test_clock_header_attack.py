"""The send-time header attack of issue 18 (item 1) through the real broker: one 20-byte
garbage message whose unsigned `x-wxtoken-sent-ms` says now + 86,399 s, published by a
login that may write the tokens exchange. Before, every subscriber's clock offset went to
-86,399 s: all 10 apps unavailable and each next genuine version dropped as expired, for
the five minutes of the estimate's window. Now the header of an unverified body is never
read: no app goes missing and the next versions are taken."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pika
import pytest

from consumer_lib.amqp.messages import MESSAGE_TYPE, SENT_MS_HEADER
from tests.waiting import wait_for

from .procs import wait_line
from .stack import Stack, make_stack

APP_COUNT = 10
DAY_S = 86_400


@pytest.fixture
def fleet(tmp_path: Path, service_env: dict[str, str]) -> Iterator[Stack]:
    built = make_stack(tmp_path, service_env, expires_in_s=30, overlap_s=10, app_count=APP_COUNT)
    yield built
    built.close()


def publish_garbage(stack: Stack, sent_ms: int) -> None:
    """20 bytes that are no update, with the send-time header, as any writer may."""
    connection = pika.BlockingConnection(pika.URLParameters(stack.service_env["WXTOKEN_AMQP_URL"]))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.basic_publish(
            exchange=stack.service_env["WXTOKEN_EXCHANGE"],
            routing_key="",
            body=b"x" * 20,
            properties=pika.BasicProperties(
                headers={SENT_MS_HEADER: sent_ms},
                type=MESSAGE_TYPE,
                content_type="application/json",
            ),
        )
    finally:
        connection.close()


@pytest.mark.slow
def test_one_garbage_message_with_a_header_a_day_ahead_takes_no_app_away(fleet: Stack) -> None:
    """After the message every app stays served and every app's next genuine version is
    taken and used; the subscriber rejected the message (so it did arrive)."""
    stack = fleet
    stack.producer()
    subscriber = stack.subscriber()
    subscriber.wait_ready()
    for app_id in stack.app_ids:
        subscriber.wait_calls(app_id, 1)
    first = {app: min(c["version"] for c in subscriber.calls(app)) for app in stack.app_ids}
    # The tokens held must have come pushed (a snapshot's are timed by PTTL, not the offset):
    # the versions after the first ones (30 s tokens, refreshed at 80 % of their life).
    for app_id in stack.app_ids:
        subscriber.wait_calls(app_id, 1, after_version=first[app_id], timeout_s=60)
    held = {app: max(c["version"] for c in subscriber.calls(app)) for app in stack.app_ids}
    attack_s = time.time()
    publish_garbage(stack, round((attack_s + DAY_S - 1) * 1000))
    wait_line(
        subscriber,
        lambda line: "rejected message" in line,
        timeout_s=10,
        message="the subscriber rejecting the garbage",
    )

    def next_versions_in_use() -> bool:
        return all(
            any(c["version"] > held[app] for c in subscriber.calls(app)) for app in stack.app_ids
        )

    wait_for(next_versions_in_use, timeout_s=60, message="every app's next version in use")
    missing = {e["app"] for e in subscriber.events("unavailable") if e["t"] >= attack_s}
    print(f"[send-time header attack] apps unavailable after the message: {len(missing)} of 10")
    assert missing == set()
    assert "dropped expired" not in subscriber.stderr_text()
    assert subscriber.bad_calls() == [], f"rejected calls; see {subscriber.log_path}"
