"""What runs in each process of the fan-out bench (see fanout.py): the subscribers of both
sides, an observer on each exchange, the sandbox WeChat and the raw publisher; and the seed
that spreads the producer's refreshes evenly."""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import pika
import redis

from consumer_lib import ClientSettings, TokenClient, TokenSource, TokenUpdate
from consumer_lib.amqp.messages import sent_s
from consumer_lib.wire.keys import KeyLayout
from consumer_lib.wire.signing import PLAIN, UpdateCodec, load_private_key
from ops.sandbox import SandboxConfig, SandboxServer
from producer.store.tokens import TokenStore

REDIS_URL = "redis://127.0.0.1:6379/0"
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
EXPIRES_IN_S = 8  # the producer refreshes each token 20 % (1.6 s) before its end
BODY_BYTES = 600  # about a signed update's size


def wx_subscriber(number: int, settings: dict[str, Any], out: Any, stop: Event) -> None:
    """A service process: a TokenClient, and a callback reporting each new token."""
    client = TokenClient(ClientSettings(**settings), name=f"wxbench-sub-{number}")
    client.on_update(lambda update: out.put(("wx", number, update.value, time.time())))
    with client:
        if client.wait_connected(30):
            out.put(("ready", number, "wx", 0.0))
        stop.wait()


def consume_raw(
    exchange: str, received: Callable[..., None], out: Any, ready: tuple[Any, ...], stop: Event
) -> None:
    """A raw pika consumer of `exchange` calling `received` for each message; puts `ready`
    on `out` once consuming, and stops when `stop` is set."""
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    channel = connection.channel()
    name = channel.queue_declare(queue="", exclusive=True, auto_delete=True).method.queue
    channel.queue_bind(queue=name, exchange=exchange)
    channel.basic_consume(queue=name, on_message_callback=received, auto_ack=True)
    out.put(ready)
    while not stop.is_set():
        connection.process_data_events(time_limit=0.5)
    connection.close()


def raw_subscriber(number: int, exchange: str, out: Any, stop: Event) -> None:
    """A raw pika consumer of the raw fanout exchange."""

    def received(_channel: Any, _method: Any, _properties: Any, body: bytes) -> None:
        out.put(("raw", number, body[:32].decode(), time.time()))

    consume_raw(exchange, received, out, ("ready", number, "raw", 0.0), stop)


def observer(side: str, exchange: str, out: Any, stop: Event) -> None:
    """One more raw consumer on each side (so both fan out to as many queues): on wxtoken's,
    it reads the producer's send time from each message's header."""

    def received(_channel: Any, _method: Any, properties: Any, body: bytes) -> None:
        if side == "wx":  # unverified: only the value is wanted, to match the answer
            value = PLAIN.decode(body).value
            out.put(("sent-wx", 0, value, sent_s(properties.headers) or 0.0))

    consume_raw(exchange, received, out, ("ready", 0, "observer", 0.0), stop)


def sandbox_process(apps: dict[str, str], out: Any, stop: Event) -> None:
    """The sandbox WeChat, reporting the moment it answers each token request."""
    sandbox = SandboxServer(SandboxConfig(apps=apps, expires_in_s=EXPIRES_IN_S, overlap_s=2))
    issue = sandbox.state.classic_token

    def recording(*args: Any, **kwargs: Any) -> dict[str, object]:
        reply = issue(*args, **kwargs)
        if "access_token" in reply:
            out.put(("answered", 0, str(reply["access_token"]), time.time()))
        return reply

    sandbox.state.classic_token = recording  # type: ignore[method-assign]
    sandbox.start()
    try:
        out.put(("sandbox", 0, sandbox.base_url, 0.0))
        stop.wait()
    finally:
        sandbox.stop()


def raw_publisher(exchange: str, interval_s: float, out: Any, stop: Event) -> None:
    """Publishes with confirms at about the rate wxtoken refreshes tokens."""
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    channel = connection.channel()
    channel.confirm_delivery()
    jitter = random.Random()
    while not stop.is_set():
        message_id = uuid.uuid4().hex
        body = (message_id + "x" * BODY_BYTES).encode()
        started = time.time()
        channel.basic_publish(exchange=exchange, routing_key="", body=body)
        out.put(("rawpub", 0, message_id, started))
        connection.process_data_events(time_limit=interval_s * (0.5 + jitter.random()))
    connection.close()


def seed_staggered(apps: dict[str, str], prefix: str, key_file: Path, interval_s: float) -> None:
    """Tokens in Redis whose refresh points are `interval_s` apart: the producer adopts
    them, so its refreshes come evenly spread (as in a real fleet), not ten at once."""
    store = TokenStore(
        redis.Redis.from_url(REDIS_URL),
        KeyLayout(prefix),
        UpdateCodec(signer=load_private_key(key_file)),
    )
    now = time.time()
    for n, app_id in enumerate(apps):
        expires_at = now + 2 * EXPIRES_IN_S * 0.2 + n * interval_s
        store.write(
            TokenUpdate(
                app_id=app_id,
                value=f"TOKEN-seed-{n:04d}-" + "x" * 120,
                issued_at=expires_at - EXPIRES_IN_S,
                expires_at=expires_at,
                version=n + 1,
                source=TokenSource.REFRESH,
                producer_id="bench-seed",
            )
        )
