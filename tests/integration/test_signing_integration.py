"""Signed updates against real processes: someone who can publish on the exchange or write
to Redis still cannot make a subscriber use their token."""

from __future__ import annotations

import time

import pika
import redis
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from consumer_lib.wire.keys import KeyLayout
from consumer_lib.wire.signing import UpdateCodec
from producer.publishing import publish_update
from tests.unit._helpers import make_update
from tests.waiting import wait_for

from .procs import wait_line
from .stack import Stack


def test_forged_updates_on_the_exchange_are_dropped(stack: Stack) -> None:
    """An unsigned update and one signed with a stranger's key, both with a higher version,
    are dropped by subscribers, which keep using the genuine token."""
    stack.producer()
    subscriber = stack.subscriber()
    subscriber.wait_ready()
    app_id = stack.app_ids[0]
    subscriber.wait_calls(app_id, 2)
    genuine = stack.snapshot(app_id)
    assert genuine is not None
    forged = make_update(
        app_id=app_id,
        value="TOKEN-from-the-attacker-0001",
        version=genuine.version + 1000,
        issued_at=genuine.issued_at,
    )
    connection = pika.BlockingConnection(pika.URLParameters(stack.service_env["WXTOKEN_AMQP_URL"]))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        for codec in (
            UpdateCodec(accept_unsigned=True),
            UpdateCodec(signer=Ed25519PrivateKey.generate()),
        ):
            publish_update(
                channel,
                stack.service_env["WXTOKEN_EXCHANGE"],
                forged,
                now_s=genuine.issued_at,
                sender="attacker",
                codec=codec,
            )
    finally:
        connection.close()
    wait_line(
        subscriber,
        lambda line: "unknown key" in line,
        timeout_s=10,
        message="the subscriber rejecting the forged signature",
    )
    calls_before = len(subscriber.calls(app_id))
    subscriber.wait_calls(app_id, calls_before + 5)
    assert all(call["version"] < forged.version for call in subscriber.calls(app_id))
    assert subscriber.bad_calls() == []
    assert "unsigned" in subscriber.stderr_text()
    assert forged.value not in subscriber.stderr_text()


def test_forged_snapshot_in_redis_is_never_served_and_gets_replaced(stack: Stack) -> None:
    """An unsigned token written straight into Redis with a huge version is ignored by a
    late subscriber, and the leading producer replaces it with its own signed token."""
    app_id = stack.app_ids[0]
    forged = make_update(
        app_id=app_id, value="TOKEN-from-the-attacker-0002", version=2**52, issued_at=time.time()
    )
    client = redis.Redis.from_url(stack.service_env["WXTOKEN_REDIS_URL"])
    try:
        key = KeyLayout(stack.service_env["WXTOKEN_KEY_PREFIX"]).token(app_id)
        client.set(key, forged.encode())
        producer = stack.producer()
        wait_line(
            producer,
            lambda line: "deleted an invalid snapshot" in line,
            timeout_s=20,
            message="the producer discarding the forged snapshot",
        )
        wait_for(lambda: stack.snapshot(app_id), timeout_s=20, message="a genuine snapshot")
        genuine = stack.snapshot(app_id)
        assert genuine is not None
        assert genuine.value != forged.value
        subscriber = stack.subscriber()
        subscriber.wait_ready()
        subscriber.wait_calls(app_id, 3)
        assert subscriber.bad_calls() == []
        assert {call["version"] for call in subscriber.calls(app_id)} == {genuine.version}
    finally:
        client.close()
