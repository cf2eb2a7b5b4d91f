"""Several broker URLs (a RabbitMQ cluster): when the first node goes away, subscribers and
the publisher carry on through the next one.

Two `TcpProxy`s in front of the shared local RabbitMQ stand in for two cluster nodes;
cutting proxy 1 (and keeping it cut) is node 1 going down.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import pika
import pytest
from pika.adapters.blocking_connection import BlockingChannel

from consumer_lib import ClientSettings, TokenClient, TokenUpdate
from consumer_lib.amqp import declare_exchange, publish_update
from producer.messaging.publisher import Publisher
from tests.unit._helpers import make_update
from tests.waiting import wait_for

from .tcp_proxy import TcpProxy, proxy_to

APP = "wxbrokers0000001"


def token_at(version: int) -> TokenUpdate:
    """An update of APP valid for two hours from now, its value naming its version."""
    return make_update(
        app_id=APP,
        version=version,
        value=f"BROKER-TOKEN-v{version}-{'b' * 20}",
        issued_at=time.time(),
    )


def carries(proxy: TcpProxy) -> bool:
    """True while `proxy` forwards at least one connection (its socket set is not empty)."""
    with proxy._lock:
        return bool(proxy._sockets)


@pytest.fixture
def nodes(amqp_url: str) -> Iterator[tuple[TcpProxy, TcpProxy]]:
    """Two proxies to the real broker: the two "nodes" of the cluster."""
    real = urlsplit(amqp_url)
    with (
        proxy_to(real.hostname or "127.0.0.1", real.port or 5672) as first,
        proxy_to(real.hostname or "127.0.0.1", real.port or 5672) as second,
    ):
        yield first, second


def cluster_url(amqp_url: str, *proxies: TcpProxy) -> str:
    """`amqp_url`'s credentials and vhost, once per proxy, comma-separated, in order."""
    real = urlsplit(amqp_url)
    userinfo = real.netloc.rpartition("@")[0]
    return ",".join(
        real._replace(netloc=f"{userinfo}@127.0.0.1:{proxy.port}").geturl() for proxy in proxies
    )


@pytest.fixture
def broker(amqp_url: str, isolation: dict[str, str]) -> Iterator[BlockingChannel]:
    """A confirming channel straight to the real broker, with the test's exchange declared."""
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        declare_exchange(channel, isolation["exchange"])
        yield channel
    finally:
        connection.close()


def test_token_client_fails_over_to_the_second_broker(
    nodes: tuple[TcpProxy, TcpProxy],
    broker: BlockingChannel,
    amqp_url: str,
    redis_url: str,
    isolation: dict[str, str],
) -> None:
    """With node 1 cut for good, the client resubscribes through node 2 and receives there."""
    first, second = nodes
    exchange = isolation["exchange"]
    settings = ClientSettings(
        insecure_accept_unsigned=True,  # plain updates: signing is not what is tested
        redis_url=redis_url,
        amqp_url=cluster_url(amqp_url, first, second),
        reconnect_max_s=0.5,
        exchange=isolation["exchange"],
        key_prefix=isolation["key_prefix"],
    )
    with TokenClient(settings) as client:
        assert client.wait_connected(10)
        assert carries(first)
        assert not carries(second)
        before = token_at(1)
        publish_update(broker, exchange, before, now_s=time.time(), sender="test")
        # Redis holds nothing under the test's prefix: tokens can only come by the broker.
        assert client.get_token(APP, timeout=10) == before.value

        first.cut()
        cut_at = time.monotonic()
        wait_for(
            lambda: carries(second) and client.connected,
            timeout_s=20,
            message="the client to resubscribe through node 2",
        )
        reconnect_s = time.monotonic() - cut_at
        after = token_at(2)
        publish_update(broker, exchange, after, now_s=time.time(), sender="test")
        wait_for(
            lambda: client.get(APP, timeout=0).version == after.version,
            message="the token published after the failover",
        )
        received_s = time.monotonic() - cut_at
        assert client.get_token(APP) == after.value
        assert not carries(first)
    print(
        f"\nsubscriber: resubscribed through node 2 {reconnect_s:.2f} s after node 1 was cut; "
        f"new token received {received_s:.2f} s after the cut"
    )


def test_publisher_fails_over_to_the_second_broker(
    nodes: tuple[TcpProxy, TcpProxy],
    broker: BlockingChannel,
    amqp_url: str,
    isolation: dict[str, str],
) -> None:
    """With node 1 cut for good, an update published meanwhile goes out through node 2."""
    first, second = nodes
    exchange = isolation["exchange"]
    queue = broker.queue_declare(queue="", exclusive=True, auto_delete=True).method.queue
    broker.queue_bind(queue=queue, exchange=exchange)

    def next_received() -> TokenUpdate | None:
        _, _, body = broker.basic_get(queue=queue, auto_ack=True)
        return None if body is None else TokenUpdate.decode(body)

    publisher = Publisher(
        cluster_url(amqp_url, first, second), exchange, sender="wxtoken-test", reconnect_max_s=0.5
    ).start()
    try:
        wait_for(lambda: publisher.connected, message="the publisher to connect")
        assert carries(first)
        assert not carries(second)
        before = token_at(1)
        publisher.publish(before)
        assert wait_for(next_received, message="the first update") == before

        first.cut()
        cut_at = time.monotonic()
        after = token_at(2)
        publisher.publish(after)  # kept while the publisher reconnects
        assert wait_for(next_received, timeout_s=20, message="the update sent meanwhile") == after
        published_s = time.monotonic() - cut_at
        assert carries(second)
        assert not carries(first)
        assert publisher.connected
    finally:
        publisher.close()
    print(f"\npublisher: update out through node 2 {published_s:.2f} s after node 1 was cut")
