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
import multiprocessing as mp
import os
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import pika
import redis
from _fanout_report import (
    cpu_s,
    percentile,
    print_where_the_time_goes,
)
from _fanout_sides import (
    AMQP_URL,
    EXPIRES_IN_S,
    REDIS_URL,
    observer,
    raw_publisher,
    raw_subscriber,
    sandbox_process,
    seed_staggered,
    wx_subscriber,
)

from consumer_lib.amqp import declare_exchange
from consumer_lib.wire.signing import generate_keypair

ROOT = Path(__file__).resolve().parents[1]
IDLE_WINDOW_S = 5.0


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


if __name__ == "__main__":
    sys.exit(main())
