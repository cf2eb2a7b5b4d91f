"""How many confirmed publishes a second does the producer's publisher do?

A takeover re-publishes every app at once: 10,000 apps must be out, confirmed, within 5 s.
Measured in one run against the local RabbitMQ, both with signed updates and one normal
subscriber queue bound:

    baseline   one blocking confirm per message (pika's BlockingChannel.confirm_delivery,
               how the publisher worked before pipelining)
    Publisher  producer.messaging.publisher.Publisher: publishes in bursts, confirms as they come

    .venv/bin/python bench/publish.py [--apps 10000] [--baseline 2000]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pika
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from consumer_lib import TokenSource, TokenUpdate
from consumer_lib.amqp import declare_exchange, publish_update
from consumer_lib.wire.signing import UpdateCodec
from producer.messaging.publisher import Publisher

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"


def updates(count: int) -> list[TokenUpdate]:
    now = time.time()
    return [
        TokenUpdate(
            app_id=f"wxbench{n:09d}",
            value=f"TOKEN-{n:09d}-" + "x" * 120,
            issued_at=now,
            expires_at=now + 3600,
            version=n + 1,
            source=TokenSource.REFRESH,
            producer_id="bench",
        )
        for n in range(count)
    ]


def baseline_per_s(exchange: str, codec: UpdateCodec, count: int) -> float:
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        started = time.perf_counter()
        for update in updates(count):
            publish_update(channel, exchange, update, now_s=time.time(), sender="b", codec=codec)
        return count / (time.perf_counter() - started)
    finally:
        connection.close()


def publisher_s(exchange: str, codec: UpdateCodec, count: int) -> float:
    publisher = Publisher(AMQP_URL, exchange, sender="wxbench-publisher", codec=codec).start()
    try:
        deadline = time.monotonic() + 10
        while not publisher.connected and time.monotonic() < deadline:
            time.sleep(0.01)
        batch = updates(count)
        started = time.perf_counter()
        for update in batch:
            publisher.publish(update)
        while publisher.published_count < count:
            if time.perf_counter() - started > 120:
                raise SystemExit(f"only {publisher.published_count} of {count} confirmed")
            time.sleep(0.002)
        return time.perf_counter() - started
    finally:
        publisher.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--apps", type=int, default=10_000, help="updates in the burst")
    parser.add_argument("--baseline", type=int, default=2_000, help="baseline publishes")
    args = parser.parse_args()
    codec = UpdateCodec(signer=Ed25519PrivateKey.generate())
    exchange = f"wxbench.publish-{uuid.uuid4().hex[:8]}"
    admin = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    channel = admin.channel()
    declare_exchange(channel, exchange)
    queue = channel.queue_declare(queue="", exclusive=True).method.queue
    channel.queue_bind(queue=queue, exchange=exchange)
    try:
        base_rate = baseline_per_s(exchange, codec, args.baseline)
        channel.queue_purge(queue=queue)
        burst_s = publisher_s(exchange, codec, args.apps)
    finally:
        channel.exchange_delete(exchange)
        admin.close()
    rate = args.apps / burst_s
    print(f"cores: {os.cpu_count()}")
    print(f"baseline, a blocking confirm per message: {base_rate:8.0f} confirmed publishes/s")
    print(f"Publisher, pipelined confirms:            {rate:8.0f} confirmed publishes/s")
    print(f"ratio: {rate / base_rate:.1f}x the baseline")
    print(
        f"a takeover of {args.apps} apps: all confirmed in {burst_s:.2f} s "
        f"(the baseline would take {args.apps / base_rate:.1f} s; goal <= 5 s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
