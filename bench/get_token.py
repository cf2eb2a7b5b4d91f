"""How fast is `TokenClient.get_token()` next to reading the same key from Redis?

Both are measured in this one run, on this machine, against the local Redis: the figure
that matters is the ratio, not the nanoseconds. The client is started for real (its
subscriber thread consuming from RabbitMQ) while it is measured.

    .venv/bin/python bench/get_token.py [--calls 200000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pika
import redis

from consumer_lib import ClientSettings, TokenClient, TokenSource, TokenUpdate
from consumer_lib.amqp import declare_exchange
from consumer_lib.wire.keys import KeyLayout
from producer.store.tokens import TokenStore

REDIS_URL = "redis://127.0.0.1:6379/0"
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"


def per_call_ns(func: Callable[[], object], calls: int, rounds: int) -> list[float]:
    """Nanoseconds per call, one figure per round."""
    figures = []
    for _ in range(rounds):
        started = time.perf_counter_ns()
        for _ in range(calls):
            func()
        figures.append((time.perf_counter_ns() - started) / calls)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200_000, help="get_token() calls per round")
    parser.add_argument("--redis-calls", type=int, default=20_000, help="Redis GETs per round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    prefix = f"wxbench-{uuid.uuid4().hex[:8]}"
    keys = KeyLayout(prefix)
    client = redis.Redis.from_url(REDIS_URL)
    now = time.time()
    update = TokenUpdate(
        app_id="wxbench000000001",
        value="T" * 140,
        issued_at=now,
        expires_at=now + 3600,
        version=1,
        source=TokenSource.REFRESH,
        producer_id="bench",
    )
    TokenStore(client, keys).write(update)
    exchange = f"wxbench.{prefix}"
    broker = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    declare_exchange(broker.channel(), exchange)
    settings = ClientSettings(
        insecure_accept_unsigned=True,  # plain updates: signing is not what is tested
        redis_url=REDIS_URL,
        amqp_url=AMQP_URL,
        key_prefix=prefix,
        exchange=exchange,
    )
    tokens = TokenClient(settings).start()
    try:
        assert tokens.wait_connected(10), "the client did not subscribe to the exchange"
        assert tokens.get_token(update.app_id, timeout=10) == update.value
        key = keys.token(update.app_id)
        assert client.get(key) is not None

        get_token_ns = per_call_ns(lambda: tokens.get_token(update.app_id), args.calls, args.rounds)
        redis_get_ns = per_call_ns(lambda: client.get(key), args.redis_calls, args.rounds)
    finally:
        tokens.close()
        client.delete(keys.token(update.app_id), keys.version(update.app_id), keys.known)
        client.close()
        broker.channel().exchange_delete(exchange)
        broker.close()

    token_ns = statistics.median(get_token_ns)
    redis_ns = statistics.median(redis_get_ns)
    print(
        f"get_token():          median {token_ns:10.0f} ns/call "
        f"(rounds: {', '.join(f'{f:.0f}' for f in get_token_ns)})"
    )
    print(
        f"Redis GET, same key:  median {redis_ns:10.0f} ns/call "
        f"(rounds: {', '.join(f'{f:.0f}' for f in redis_get_ns)})"
    )
    print(
        f"ratio: get_token() is {redis_ns / token_ns:.0f}x faster than a Redis GET "
        f"({token_ns / redis_ns:.4f} of its time)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
