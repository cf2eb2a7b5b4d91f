"""The producer's publisher against the real broker: nacks, unexpected errors, bursts."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pika
import pytest
from pika.adapters.blocking_connection import BlockingChannel

from consumer_lib.amqp import declare_exchange
from consumer_lib.wire.signing import PLAIN, UpdateCodec
from consumer_lib.wire.update import TokenUpdate
from producer.messaging.publisher import NACK_RETRIES, Publisher
from tests.unit._helpers import make_update
from tests.waiting import wait_for


@pytest.fixture
def channel(amqp_url: str, isolation: dict[str, str]) -> Iterator[BlockingChannel]:
    """A plain channel to the real broker with the test's exchange declared."""
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        made = connection.channel()
        declare_exchange(made, isolation["exchange"])
        yield made
    finally:
        connection.close()


def bound_queue(channel: BlockingChannel, exchange: str, **arguments: object) -> str:
    """A server-named exclusive queue bound to `exchange`, never consumed."""
    queue: str = channel.queue_declare(
        queue="", exclusive=True, arguments=arguments or None
    ).method.queue
    channel.queue_bind(queue=queue, exchange=exchange)
    return queue


def waiting_in(channel: BlockingChannel, queue: str) -> int:
    count: int = channel.queue_declare(queue=queue, passive=True).method.message_count
    return count


def fresh(version: int) -> TokenUpdate:
    return make_update(version=version, issued_at=time.time(), value=f"TOKEN-fresh-{version:04d}")


def test_a_queue_that_refuses_publishes_does_not_flood_the_other_subscribers(
    amqp_url: str, isolation: dict[str, str], channel: BlockingChannel
) -> None:
    """A consumer's own `x-max-length=1, reject-publish` queue nacks every publish; the
    publisher retries a few times with backoff, gives up until the next re-publish, and the
    normal subscriber receives the update a bounded number of times."""
    exchange = isolation["exchange"]
    refusing = bound_queue(channel, exchange, **{"x-max-length": 1, "x-overflow": "reject-publish"})
    normal = bound_queue(channel, exchange)
    channel.basic_publish(exchange=exchange, routing_key="", body=b"filler")  # fills `refusing`
    wait_for(lambda: waiting_in(channel, refusing) == 1, message="the refusing queue to be full")
    publisher = Publisher(amqp_url, exchange, sender="wxtest-publisher", reconnect_max_s=2.0)
    publisher.start()
    try:
        started = time.monotonic()
        publisher.publish(fresh(1))
        wait_for(
            lambda: publisher.stats.given_up == 1,
            timeout_s=30,
            message="the publisher to give up on the refused update",
        )
        episode_s = time.monotonic() - started
        delivered = waiting_in(channel, normal) - 1  # less the filler
        print(
            f"\nnack storm: {delivered} deliveries to the normal subscriber in {episode_s:.1f} s "
            f"({publisher.stats.nacked} nacks, then given up)"
        )
        assert 1 <= delivered <= 1 + NACK_RETRIES
        assert publisher.stats.nacked == 1 + NACK_RETRIES
        assert publisher.healthy

        # Once the refusing queue has room again, the next update is confirmed as usual.
        channel.queue_purge(queue=refusing)
        publisher.publish(fresh(2))
        wait_for(lambda: publisher.published_count == 1, message="the next update confirmed")
    finally:
        publisher.close()
    assert not publisher.healthy  # the thread has stopped


class FailsOnce(UpdateCodec):
    """Encodes like PLAIN, but the first call raises a bug-like error."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def encode(self, update: TokenUpdate) -> bytes:
        self.calls += 1
        if self.calls == 1:
            raise ZeroDivisionError("a bug in the publisher thread")
        return PLAIN.encode(update)


def test_an_unexpected_error_in_the_publisher_is_logged_and_the_loop_restarts(
    amqp_url: str,
    isolation: dict[str, str],
    channel: BlockingChannel,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Not only AMQP errors: any exception is logged with its traceback, the loop restarts
    and the update still goes out."""
    exchange = isolation["exchange"]
    normal = bound_queue(channel, exchange)
    publisher = Publisher(
        amqp_url, exchange, sender="wxtest-publisher", reconnect_max_s=0.5, codec=FailsOnce()
    )
    publisher.start()
    try:
        publisher.publish(fresh(1))
        wait_for(lambda: publisher.published_count == 1, message="the update after the restart")
        assert publisher.stats.loop_errors == 1
        assert publisher.healthy
        assert waiting_in(channel, normal) == 1
    finally:
        publisher.close()
    assert "unexpected error in the publisher" in caplog.text
    assert "ZeroDivisionError" in caplog.text


def test_a_burst_of_updates_is_confirmed_in_full(
    amqp_url: str, isolation: dict[str, str], channel: BlockingChannel
) -> None:
    """A takeover's burst (one update per app) is published and confirmed, none lost."""
    exchange = isolation["exchange"]
    normal = bound_queue(channel, exchange)
    apps = 2_000
    publisher = Publisher(amqp_url, exchange, sender="wxtest-publisher").start()
    try:
        wait_for(lambda: publisher.connected, message="the publisher to connect")
        started = time.monotonic()
        for n in range(apps):
            publisher.publish(
                make_update(app_id=f"wxapp{n:06d}", issued_at=time.time(), version=n + 1)
            )
        wait_for(lambda: publisher.published_count == apps, timeout_s=60, message="every ack")
        elapsed_s = time.monotonic() - started
    finally:
        publisher.close()
    print(f"\n{apps} updates confirmed in {elapsed_s:.2f} s ({apps / elapsed_s:.0f}/s)")
    assert waiting_in(channel, normal) == apps
