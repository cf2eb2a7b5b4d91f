"""From the upstream answer to every subscriber: wxtoken against raw pika fan-out.

One run, one machine, both sides at once:

    wxtoken  the sandbox WeChat (its own process) with short classic tokens, one producer
             (`python -m producer`, signing), N subscriber processes each holding a
             `TokenClient` with an `on_update` callback (verifying). Latency of a token:
             the moment the last subscriber's callback saw it, minus the moment the
             sandbox answered the producer's fetch.
    raw      a raw pika publisher with confirms (its own process) and N raw pika consumer
             processes on a fanout exchange of their own, fed at the same rate with bodies
             of the same size. Latency: the last consumer's receipt minus the moment the
             publisher started publishing.

Prints p50/p99 of both and the ratio (goal: wxtoken p99 <= 1.2x raw p99), with the core
count, and where the time goes: one more raw consumer on each exchange (an observer) dates
the broker's first delivery, the producer's send-time header dates its publish, each
subscriber process's CPU is read from /proc, and one signature check is timed in-process.
Needs the local Redis and RabbitMQ.

    .venv/bin/python bench/fanout.py [--subscribers 50] [--apps 10] [--seconds 60]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import queue
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pika
import redis
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from consumer_lib import ClientSettings, TokenClient, TokenSource, TokenUpdate
from consumer_lib.amqp import declare_exchange
from consumer_lib.amqp.messages import sent_s
from consumer_lib.wire.keys import KeyLayout
from consumer_lib.wire.signing import (
    UpdateCodec,
    generate_keypair,
    load_private_key,
    signature_ok,
    verifier,
)
from ops.sandbox import SandboxConfig, SandboxServer
from producer.store import TokenStore

ROOT = Path(__file__).resolve().parents[1]
REDIS_URL = "redis://127.0.0.1:6379/0"
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
EXPIRES_IN_S = 8  # the producer refreshes each token 20 % (1.6 s) before its end
BODY_BYTES = 600  # about a signed update's size
IDLE_WINDOW_S = 5.0


def wx_subscriber(number: int, settings: dict[str, Any], out: Any, stop: Event) -> None:
    """A service process: a TokenClient, and a callback reporting each new token."""
    client = TokenClient(ClientSettings(**settings), name=f"wxbench-sub-{number}")
    client.on_update(lambda update: out.put(("wx", number, update.value, time.time())))
    with client:
        if client.wait_connected(30):
            out.put(("ready", number, "wx", 0.0))
        stop.wait()


def raw_subscriber(number: int, exchange: str, out: Any, stop: Event) -> None:
    """A raw pika consumer of the raw fanout exchange."""
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    channel = connection.channel()
    name = channel.queue_declare(queue="", exclusive=True, auto_delete=True).method.queue
    channel.queue_bind(queue=name, exchange=exchange)

    def received(_channel: Any, _method: Any, _properties: Any, body: bytes) -> None:
        out.put(("raw", number, body[:32].decode(), time.time()))

    channel.basic_consume(queue=name, on_message_callback=received, auto_ack=True)
    out.put(("ready", number, "raw", 0.0))
    while not stop.is_set():
        connection.process_data_events(time_limit=0.5)
    connection.close()


def observer(side: str, exchange: str, out: Any, stop: Event) -> None:
    """One more raw consumer on each side (so both fan out to as many queues): on wxtoken's,
    it reads the producer's send time from each message's header."""
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    channel = connection.channel()
    name = channel.queue_declare(queue="", exclusive=True, auto_delete=True).method.queue
    channel.queue_bind(queue=name, exchange=exchange)

    def received(_channel: Any, _method: Any, properties: Any, body: bytes) -> None:
        if side == "wx":
            data = json.loads(body)
            payload = json.loads(data["payload"]) if "payload" in data else data
            out.put(("sent-wx", 0, payload["value"], sent_s(properties.headers) or 0.0))

    channel.basic_consume(queue=name, on_message_callback=received, auto_ack=True)
    out.put(("ready", 0, "observer", 0.0))
    while not stop.is_set():
        connection.process_data_events(time_limit=0.5)
    connection.close()


def cpu_s(pids: list[int]) -> float:
    """User + system CPU seconds the processes `pids` have used so far."""
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def signature_check_us() -> tuple[float, float]:
    """One Ed25519 check of an update-sized payload, in µs: libsodium (what consumer_lib
    uses) and OpenSSL (through cryptography), in this process."""
    key = Ed25519PrivateKey.generate()
    payload = b"x" * 350
    signature = key.sign(payload)
    checker = verifier(key.public_key())
    rounds = 2000
    started = time.perf_counter()
    for _ in range(rounds):
        signature_ok(checker, signature, payload)
    sodium_us = (time.perf_counter() - started) / rounds * 1e6
    public_key = key.public_key()
    started = time.perf_counter()
    for _ in range(rounds):
        public_key.verify(signature, payload)
    return sodium_us, (time.perf_counter() - started) / rounds * 1e6


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


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=50)
    parser.add_argument("--apps", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=60.0, help="measurement time")
    parser.add_argument(
        "--unsigned", action="store_true", help="diagnosis only: no signing, no verifying"
    )
    args = parser.parse_args()
    ctx = mp.get_context("fork")  # before any thread starts here
    tag = uuid.uuid4().hex[:8]
    prefix, exchange, raw_exchange = f"wxbench-{tag}", f"wxbench.{tag}", f"wxbench.raw-{tag}"
    tmp = Path(tempfile.mkdtemp(prefix="wxbench-fanout-"))
    private_key, public_key = generate_keypair(tmp / "signing")
    admin = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    declare_exchange(admin.channel(), exchange)
    declare_exchange(admin.channel(), raw_exchange)
    settings = {
        "redis_url": REDIS_URL,
        "amqp_url": AMQP_URL,
        "exchange": exchange,
        "key_prefix": prefix,
        "verify_keys": "" if args.unsigned else str(public_key),
        "insecure_accept_unsigned": args.unsigned,
    }
    out: Any = ctx.Queue()
    stop = ctx.Event()
    apps = {f"wxbench{n:010d}": f"secret-{n}" for n in range(args.apps)}
    children = (
        [
            ctx.Process(target=sandbox_process, args=(apps, out, stop), daemon=True),
        ]
        + [
            ctx.Process(target=wx_subscriber, args=(n, settings, out, stop), daemon=True)
            for n in range(args.subscribers)
        ]
        + [
            ctx.Process(target=raw_subscriber, args=(n, raw_exchange, out, stop), daemon=True)
            for n in range(args.subscribers)
        ]
        + [
            ctx.Process(target=observer, args=("wx", exchange, out, stop), daemon=True),
            ctx.Process(target=observer, args=("raw", raw_exchange, out, stop), daemon=True),
        ]
    )

    for child in children:
        child.start()
    wx_pids = [child.pid or 0 for child in children[1 : 1 + args.subscribers]]
    raw_pids = [
        child.pid or 0 for child in children[1 + args.subscribers : 1 + 2 * args.subscribers]
    ]
    ready, base_url = 0, ""
    while ready < 2 * args.subscribers + 2 or not base_url:
        kind, _, what, _ = out.get(timeout=120)
        ready += kind == "ready"
        base_url = what if kind == "sandbox" else base_url
    print(f"{args.subscribers} TokenClient and {args.subscribers} raw subscribers ready")
    # What the subscribers spend with nothing to receive (their rounds), to subtract below.
    cpu_pids = {"wx": wx_pids, "raw": raw_pids}
    idle_from = {side: cpu_s(pids) for side, pids in cpu_pids.items()}
    time.sleep(IDLE_WINDOW_S)
    idle_per_s = {
        side: (cpu_s(cpu_pids[side]) - idle_from[side]) / IDLE_WINDOW_S for side in cpu_pids
    }

    interval_s = EXPIRES_IN_S * 0.8 / args.apps
    seed_staggered(apps, prefix, private_key, interval_s)
    apps_file = tmp / "apps.toml"
    apps_file.write_text(
        "".join(
            f'[[apps]]\napp_id = "{app}"\nsecret = "{secret}"\ntoken_api = "classic"\n'
            for app, secret in apps.items()
        )
    )
    producer_log = (tmp / "producer.log").open("w")
    producer = subprocess.Popen(
        [sys.executable, "-m", "producer"],
        cwd=ROOT,
        env={
            **os.environ,
            "WXTOKEN_REDIS_URL": REDIS_URL,
            "WXTOKEN_AMQP_URL": AMQP_URL,
            "WXTOKEN_EXCHANGE": exchange,
            "WXTOKEN_KEY_PREFIX": prefix,
            **(
                {"WXTOKEN_INSECURE_ACCEPT_UNSIGNED": "1"}
                if args.unsigned
                else {"WXTOKEN_SIGNING_KEY_FILE": str(private_key)}
            ),
            "WXTOKEN_VERIFY_KEYS": "" if args.unsigned else str(public_key),
            "WXTOKEN_APPS_FILE": str(apps_file),
            "WXTOKEN_WECHAT_BASE_URL": base_url,
            "WXTOKEN_LEASE_TTL_S": "1.5",
        },
        stdout=producer_log,
        stderr=producer_log,
    )
    publisher = ctx.Process(
        target=raw_publisher, args=(raw_exchange, interval_s, out, stop), daemon=True
    )
    publisher.start()

    received: dict[tuple[str, str], dict[int, float]] = defaultdict(dict)
    raw_started: dict[str, float] = {}
    answered: dict[str, float] = {}
    published: dict[str, float] = {}  # wxtoken's tokens: the producer's send-time header

    def collect() -> None:
        while True:
            try:
                kind, number, key, at = out.get(timeout=0.5)
            except queue.Empty:
                if stop.is_set():
                    return
                continue
            if kind == "rawpub":
                raw_started[key] = at
            elif kind == "answered":
                answered[key] = at
            elif kind in ("wx", "raw"):
                received[(kind, key)].setdefault(number, at)
            elif kind == "sent-wx":
                published[key] = at

    collector = threading.Thread(target=collect, daemon=True)
    collector.start()
    warm_up_s = EXPIRES_IN_S + 2.0  # past the first fetches, which subscribers may read
    measure_from = time.time() + warm_up_s
    cpu_before: dict[str, float] = {}
    cpu_used: dict[str, float] = {}
    try:
        time.sleep(warm_up_s)
        cpu_before = {side: cpu_s(pids) for side, pids in cpu_pids.items()}
        time.sleep(args.seconds)
        cpu_used = {
            side: cpu_s(pids) - cpu_before[side] - idle_per_s[side] * args.seconds
            for side, pids in cpu_pids.items()
        }
    finally:
        measure_to = time.time() - 1.0  # leave the last second time to arrive
        producer.terminate()
        producer.wait(10)
        time.sleep(1.0)
        stop.set()
        collector.join(10)
        for child in [*children, publisher]:
            child.join(5)
            if child.is_alive():
                child.kill()
        redis_client = redis.Redis.from_url(REDIS_URL)
        keys = list(redis_client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            redis_client.delete(*keys)
        admin.channel().exchange_delete(exchange)
        admin.channel().exchange_delete(exchange + ".requests")
        admin.channel().exchange_delete(raw_exchange)
        admin.close()

    def latencies_ms(kind: str, started: dict[str, float]) -> tuple[list[float], list[float], int]:
        """(the last subscriber's latency, the first one's, tokens not seen by all)."""
        figures, firsts, incomplete = [], [], 0
        for key, at in started.items():
            if not measure_from <= at <= measure_to:
                continue
            got = received.get((kind, key), {})
            if len(got) < args.subscribers:
                incomplete += 1
                continue
            figures.append((max(got.values()) - at) * 1000)
            firsts.append((min(got.values()) - at) * 1000)
        return figures, firsts, incomplete

    wx_ms, wx_first_ms, wx_missing = latencies_ms("wx", answered)
    raw_ms, raw_first_ms, raw_missing = latencies_ms("raw", raw_started)
    print(f"cores: {os.cpu_count()}; {args.subscribers} subscribers a side; producer log {tmp}")
    sides = (
        ("wxtoken", wx_ms, wx_first_ms, wx_missing),
        ("raw pika", raw_ms, raw_first_ms, raw_missing),
    )
    for name, figures, firsts, missing in sides:
        if not figures:
            print(f"{name}: no complete fan-out measured ({missing} incomplete)")
            return 1
        print(
            f"{name:9s} all {args.subscribers} hold it: p50 {percentile(figures, 0.5):6.1f} ms  "
            f"p99 {percentile(figures, 0.99):6.1f} ms  mean {statistics.fmean(figures):6.1f} ms  "
            f"(first holder p50 {percentile(firsts, 0.5):5.1f} ms; {len(figures)} tokens, "
            f"{missing} not seen by all)"
        )
    p50_ratio = percentile(wx_ms, 0.5) / percentile(raw_ms, 0.5)
    p99_ratio = percentile(wx_ms, 0.99) / percentile(raw_ms, 0.99)
    print(f"ratio wxtoken/raw: p50 {p50_ratio:.2f}  p99 {p99_ratio:.2f} (goal: p99 <= 1.2)")
    window = (measure_from, measure_from + args.seconds)
    print_where_the_time_goes(
        answered, raw_started, published, received, cpu_used, window, args.subscribers
    )
    return 0


def print_where_the_time_goes(
    answered: dict[str, float],
    raw_started: dict[str, float],
    published: dict[str, float],
    received: dict[tuple[str, str], dict[int, float]],
    cpu_used: dict[str, float],
    window: tuple[float, float],
    subscribers: int,
) -> None:
    """Medians of each leg, the subscribers' CPU a message, and one signature check."""
    print("where the time goes (p50, ms after the upstream answer / the raw publish):")
    sides = (("wxtoken", "wx", answered), ("raw pika", "raw", raw_started))
    for name, side, started in sides:
        legs: dict[str, list[float]] = defaultdict(list)
        for key, at in started.items():
            got = received.get((side, key), {})
            if not window[0] <= at <= window[1] or len(got) < subscribers:
                continue
            if side == "wx" and key in published:  # the header has ms resolution
                legs["published"].append((published[key] - at) * 1000)
            legs["first holder"].append((min(got.values()) - at) * 1000)
            legs["last holder"].append((max(got.values()) - at) * 1000)
        print(
            f"  {name:9s}"
            + "".join(f"  {leg} {statistics.median(v):5.1f}" for leg, v in legs.items() if v)
        )
    for name, side, started in sides:
        messages = subscribers * sum(1 for at in started.values() if window[0] <= at <= window[1])
        if messages and side in cpu_used:
            print(
                f"  {name:9s} subscriber CPU a message: {cpu_used[side] / messages * 1e6:4.0f} µs "
                "(from /proc, less what they spend idle)"
            )
    sodium_us, openssl_us = signature_check_us()
    print(
        f"  one Ed25519 check in this process: libsodium {sodium_us:.0f} µs (consumer_lib's), "
        f"OpenSSL {openssl_us:.0f} µs"
    )


if __name__ == "__main__":
    sys.exit(main())
