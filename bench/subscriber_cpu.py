"""CPU per message of one subscriber process: a TokenClient against a raw pika consumer.

The fan-out's latency on a small machine is the subscribers' CPU queued on its cores, so
this measures what one process spends per message: the same signed bodies, published one
at a time, first to a `TokenClient` (verifying, with an `on_update` callback), then to a raw
pika consumer, each in a process of its own; CPU is the process's user + system time over
the messages. Signed, a third process is the floor for any subscriber that checks
signatures: a raw pika consumer that checks each envelope's signature (`unseal`, on
libsodium as consumer_lib does) and does nothing else. Prints all, the ratios and the core
count. Needs the local RabbitMQ.

    .venv/bin/python bench/subscriber_cpu.py [--messages 3000] [--unsigned]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pika

from consumer_lib import ClientSettings, TokenClient, TokenSource, TokenUpdate
from consumer_lib.amqp import declare_exchange
from consumer_lib.wire.signing import (
    UpdateCodec,
    generate_keypair,
    key_id,
    load_private_key,
    load_public_keys,
    unseal,
)

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
GAP_S = 0.0005  # between two publishes: one message at a time, as in the fan-out


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def wx_side(settings: dict[str, Any], out: Any, messages: int) -> None:
    client = TokenClient(ClientSettings(**settings), name="wxbench-cpu")
    seen = [0]
    done = threading.Event()

    def counted(_update: TokenUpdate) -> None:
        seen[0] += 1
        if seen[0] == messages:
            done.set()

    client.on_update(counted)
    with client:
        client.wait_connected(30)
        out.put(cpu_s())
        done.wait(300)
        out.put(cpu_s())


def raw_side(exchange: str, out: Any, messages: int, public_key: Path | None = None) -> None:
    """A raw pika consumer; with `public_key`, it checks each envelope's signature too
    (`unseal`: the envelope and its signature, not the update inside)."""
    keys = {key_id(key): key for key in load_public_keys([public_key])} if public_key else None
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    channel = connection.channel()
    name = channel.queue_declare(queue="", exclusive=True, auto_delete=True).method.queue
    channel.queue_bind(queue=name, exchange=exchange)
    seen = [0]

    def received(_channel: Any, _method: Any, _properties: Any, body: bytes) -> None:
        if keys is not None:
            unseal(body, keys, what="update")  # raises InvalidUpdate on a bad signature
        seen[0] += 1
        if seen[0] == messages:
            out.put(cpu_s())
            channel.stop_consuming()

    channel.basic_consume(queue=name, on_message_callback=received, auto_ack=True)
    out.put(cpu_s())
    channel.start_consuming()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--unsigned", action="store_true", help="plain updates, no verify")
    args = parser.parse_args()
    ctx = mp.get_context("fork")
    tag = uuid.uuid4().hex[:8]
    exchange = f"wxbench.cpu-{tag}"
    _private, public = generate_keypair(Path(tempfile.mkdtemp(prefix="wxbench-cpu-")) / "k")
    codec = (
        UpdateCodec(accept_unsigned=True)
        if args.unsigned
        else UpdateCodec(signer=load_private_key(_private))
    )
    admin = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    channel = admin.channel()
    declare_exchange(channel, exchange)
    settings = {
        "redis_url": "redis://127.0.0.1:6379/0",
        "amqp_url": AMQP_URL,
        "exchange": exchange,
        "key_prefix": f"wxbench-cpu-{tag}",
        "verify_keys": "" if args.unsigned else str(public),
        "insecure_accept_unsigned": args.unsigned,
    }
    now_s = time.time()
    bodies = [
        codec.encode(
            TokenUpdate(
                app_id=f"wxbench{n % 10:010d}",
                value=f"TOKEN-{n:08d}-" + "v" * 110,
                version=n + 1,
                issued_at=now_s,
                expires_at=now_s + 3600,
                source=TokenSource.REFRESH,
                producer_id="wxbench-cpu",
            )
        )
        for n in range(args.messages)
    ]
    per_message_us: dict[str, float] = {}
    sides = ("wxtoken", "raw pika") if args.unsigned else ("wxtoken", "raw pika", "check only")
    for side in sides:
        out: Any = ctx.Queue()
        runs: dict[str, tuple[Callable[..., None], tuple[Any, ...]]] = {
            "wxtoken": (wx_side, (settings, out, args.messages)),
            "raw pika": (raw_side, (exchange, out, args.messages)),
            "check only": (raw_side, (exchange, out, args.messages, public)),
        }
        target, target_args = runs[side]
        child = ctx.Process(target=target, args=target_args, daemon=True)
        child.start()
        before_s = out.get(timeout=60)
        for body in bodies:
            channel.basic_publish(exchange, "", body)
            time.sleep(GAP_S)
        after_s = out.get(timeout=300)
        child.terminate()
        child.join(10)
        per_message_us[side] = (after_s - before_s) / args.messages * 1e6
    admin.close()
    wx_us, raw_us = per_message_us["wxtoken"], per_message_us["raw pika"]
    print(f"cores: {os.cpu_count()}; {args.messages} {'plain' if args.unsigned else 'signed'}")
    print(f"wxtoken   {wx_us:7.1f} us CPU per message")
    print(f"raw pika  {raw_us:7.1f} us CPU per message")
    print(f"ratio wxtoken/raw: {wx_us / raw_us:.2f} (extra {wx_us - raw_us:.1f} us)")
    if "check only" in per_message_us:
        check_us = per_message_us["check only"]
        print(
            f"floor, raw pika + signature check only: {check_us:7.1f} us CPU per message, "
            f"{check_us / raw_us:.2f}x raw"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
