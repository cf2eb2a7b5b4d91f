"""How one producer copes with 1,000, 10,000 and 100,000 apps, against the local services.

    .venv/bin/python bench/scale.py                    # the whole table (a few minutes)
    .venv/bin/python bench/scale.py --apps 10000       # one size
    .venv/bin/python bench/scale.py --apps 10000t      # 10,000 apps with both tickets

A size ending in `t` gives every app `tickets = ["jsapi", "wx_card"]`: three credentials
an app (10000t: 30,000 credentials); the figures count credentials, not apps.

For each size: a stand-in WeChat (the sandbox, in a child process, on loopback), real
producer processes (`python -m producer`) against the local Redis and RabbitMQ with a
unique key prefix and exchange, a raw pika consumer of the exchange in this process, and
one subscriber process (`TokenClient`) holding every app. It measures:

- fill: seconds from starting the leader on an empty Redis until every token is there,
  the leader's CPU seconds (user + sys, start-up included) by then, the load average, and
  the leader's Redis round trips a credential (the leader runs as `python -m producer`
  does, with redis-py's sends counted);
- threads of the leader (from /proc), the most seen;
- steady state of the leader, the standby and the subscriber: CPU in % of one core and RSS
  (from /proc/<pid>/stat and status) over a window with re-publishing going on;
- takeover: SIGKILL the leader; seconds after its lease ran out until the raw consumer has
  seen every app re-published by the new leader, and upstream calls meanwhile (sandbox);
- stop: seconds from SIGTERM until the (new) leader has exited.

Baseline, in the same run: a raw pika publisher with confirms sending one message per app
(what the takeover re-publish costs at least). Other processes share this machine: the load
average is printed with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import redis

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _scale_measure import (  # noqa: E402 - after the path is set
    RawConsumer,
    measure,
    proc_cpu_s,
    proc_status,
    raw_publish_baseline,
    read_line,
    upstream_calls,
    wait_until,
)
from _scale_report import LEASE_TTL_S, Row, print_table  # noqa: E402 - after the path is set

REDIS_URL = os.environ.get("WXTOKEN_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
AMQP_URL = os.environ.get("WXTOKEN_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
SECRET = "benchsecret0123456789abcdef"


# ------------------------------------------------------------------ child modes
def serve_sandbox(apps_json: str) -> None:
    """Child mode: the sandbox for the given app ids; prints its base URL, runs until killed."""
    from ops.sandbox import SandboxConfig, SandboxServer

    app_ids = json.loads(Path(apps_json).read_text())
    server = SandboxServer(SandboxConfig(apps=dict.fromkeys(app_ids, SECRET), expires_in_s=7200))
    print(server.base_url, flush=True)
    server.serve_forever()


def run_subscriber(count: int) -> None:
    """Child mode: a TokenClient; prints `ready` once it holds `count` apps, runs until killed."""
    import logging

    from consumer_lib import TokenClient

    logging.basicConfig(level=logging.WARNING)
    client = TokenClient.from_env().start()
    while len(client._cache.snapshot()) < count:  # bench-only peek at the holdings
        time.sleep(0.2)
    print("ready", flush=True)
    signal.sigwait({signal.SIGTERM})


def run_counted_producer(count_file: str) -> None:
    """Child mode: `python -m producer`, counting its Redis round trips (one per packed send
    of redis-py: a command, or a whole pipeline) into `count_file` every 0.2 s."""
    import itertools
    import threading

    import redis.connection

    from producer.__main__ import main as producer_main

    counter = itertools.count()
    sent = [0]
    send = redis.connection.AbstractConnection.send_packed_command

    def counted(self: Any, command: Any, check_health: bool = True) -> None:
        sent[0] = next(counter) + 1
        send(self, command, check_health)

    redis.connection.AbstractConnection.send_packed_command = counted  # type: ignore[method-assign]

    def report() -> None:
        target, scratch = Path(count_file), Path(count_file + ".new")
        while True:
            scratch.write_text(str(sent[0]))
            scratch.replace(target)
            time.sleep(0.2)

    threading.Thread(target=report, name="bench-round-trips", daemon=True).start()
    sys.exit(producer_main([]))


def parse_size(spec: str) -> tuple[int, bool]:
    """`10000` or `10000t` (every app with both tickets) -> (apps, with tickets)."""
    with_tickets = spec.endswith("t")
    count = int(spec.removesuffix("t"))
    if count < 1:
        raise argparse.ArgumentTypeError(f"not a fleet size: {spec!r}")
    return count, with_tickets


def run_size(
    count: int, *, window_s: float, fill_timeout_s: float, tmp: Path, with_tickets: bool = False
) -> Row:
    row = Row(count, tickets=with_tickets)
    tag = uuid.uuid4().hex[:8]
    prefix, exchange = f"bench-scale-{tag}", f"bench.scale.{tag}"
    app_ids = [f"wxb{tag}{n:09d}" for n in range(count)]
    (tmp / "apps.json").write_text(json.dumps(app_ids))
    apps_file = tmp / f"apps-{tag}.toml"
    tickets = 'tickets = ["jsapi", "wx_card"]\n' if with_tickets else ""
    apps_file.write_text(
        "".join(
            f'[[apps]]\napp_id = "{a}"\nsecret_env = "BENCH_SECRET"\n{tickets}' for a in app_ids
        )
    )
    credentials = row.credentials
    from consumer_lib.wire.signing import generate_keypair

    key, public = generate_keypair(tmp / f"key-{tag}")
    children: list[subprocess.Popen[str]] = []

    def spawn(args: list[str], env: dict[str, str], log_name: str) -> subprocess.Popen[str]:
        child = subprocess.Popen(
            [sys.executable, *args],
            cwd=REPO,
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=(tmp / log_name).open("w"),
            text=True,
        )
        children.append(child)
        return child

    client = redis.Redis.from_url(REDIS_URL)
    consumer = RawConsumer(exchange)
    try:
        sandbox = spawn([__file__, "--serve-sandbox", str(tmp / "apps.json")], {}, "sandbox.log")
        base_url = read_line(sandbox, 30)
        if not base_url.startswith("http"):
            raise SystemExit(f"the sandbox did not start; see {tmp / 'sandbox.log'}")
        common = {
            "WXTOKEN_REDIS_URL": REDIS_URL,
            "WXTOKEN_AMQP_URL": AMQP_URL,
            "WXTOKEN_KEY_PREFIX": prefix,
            "WXTOKEN_EXCHANGE": exchange,
            "WXTOKEN_VERIFY_KEYS": str(public),
        }
        producer_env = {
            **common,
            "WXTOKEN_SIGNING_KEY_FILE": str(key),
            "WXTOKEN_APPS_FILE": str(apps_file),
            "WXTOKEN_WECHAT_BASE_URL": base_url,
            "WXTOKEN_LEASE_TTL_S": str(LEASE_TTL_S),
            "WXTOKEN_LOG_LEVEL": "WARNING",
            "BENCH_SECRET": SECRET,
        }
        known = f"{prefix}:known"
        started = time.monotonic()
        round_trips = tmp / f"round-trips-{tag}"
        leader = spawn(
            [__file__, "--counted-producer", str(round_trips)],
            {**producer_env, "WXTOKEN_PRODUCER_ID": "a"},
            "a.log",
        )
        threads_seen = [0]

        def filled() -> bool:
            threads_seen[0] = max(threads_seen[0], proc_status(leader.pid)["Threads"])
            return int(client.scard(known)) >= credentials

        if wait_until(filled, fill_timeout_s, step_s=0.25):
            row.fill_s = time.monotonic() - started
        row.fill_cpu_s = proc_cpu_s(leader.pid)
        row.fill_load = os.getloadavg()[0]
        row.filled = int(client.scard(known))
        time.sleep(0.3)  # the count file's next write
        row.fill_round_trips = int(round_trips.read_text() or 0) if round_trips.exists() else None
        standby = spawn(["-m", "producer"], {**producer_env, "WXTOKEN_PRODUCER_ID": "b"}, "b.log")
        subscriber = spawn([__file__, "--subscriber", str(row.filled)], common, "sub.log")
        ready = read_line(subscriber, 120) == "ready"
        if not ready:
            row.notes.append("subscriber did not get ready")
        time.sleep(6)  # the standby's first batched reads
        usage = measure(
            {"leader": leader.pid, "standby": standby.pid, "subscriber": subscriber.pid},
            window_s,
        )
        row.leader, row.standby, row.subscriber = (
            usage["leader"],
            usage["standby"],
            usage["subscriber"],
        )
        row.max_threads = max(threads_seen[0], usage["leader"].threads, usage["standby"].threads)
        # Takeover: the lease runs out PTTL ms after the kill.
        calls_before = upstream_calls(base_url)
        lease_left_s = max(0, int(client.pttl(f"{prefix}:leader"))) / 1000
        leader.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        leader.wait(10)
        consumer.reset()
        lease_end = killed + lease_left_s
        if wait_until(lambda: len(consumer.seen) >= row.filled, LEASE_TTL_S + 60, step_s=0.01):
            row.takeover_s = time.monotonic() - lease_end
            row.takeover_from_kill_s = time.monotonic() - killed
        row.takeover_seen = len(consumer.seen)
        row.takeover_calls = upstream_calls(base_url) - calls_before
        # Clean stop of the new leader.
        stop_started = time.monotonic()
        standby.send_signal(signal.SIGTERM)
        try:
            standby.wait(30)
            row.stop_s = time.monotonic() - stop_started
        except subprocess.TimeoutExpired:
            row.notes.append("the new leader did not stop within 30 s")
        row.raw_publish_s = raw_publish_baseline(row.filled)
    finally:
        consumer.close()
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait(10)
        cleanup(client, prefix)
        client.close()
    return row


def cleanup(client: redis.Redis, prefix: str) -> None:
    batch = []
    for name in client.scan_iter(match=f"{prefix}:*", count=5000):
        batch.append(name)
        if len(batch) >= 5000:
            client.delete(*batch)
            batch = []
    if batch:
        client.delete(*batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--apps",
        default="1000,10000,10000t,100000",
        help="comma-separated sizes; a trailing t: every app with both tickets (rows to run)",
    )
    parser.add_argument("--window", type=float, default=20.0, help="steady-state seconds")
    parser.add_argument("--serve-sandbox", help=argparse.SUPPRESS)
    parser.add_argument("--subscriber", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--counted-producer", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_sandbox:
        serve_sandbox(args.serve_sandbox)
        return
    if args.subscriber is not None:
        run_subscriber(args.subscriber)
        return
    if args.counted_producer:
        run_counted_producer(args.counted_producer)
        return
    sizes = [parse_size(s.strip()) for s in args.apps.split(",")]
    print(f"os.cpu_count() = {os.cpu_count()}; load average {os.getloadavg()}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="wxtoken-bench-") as tmp:
        for count, with_tickets in sizes:
            big = count * (3 if with_tickets else 1) >= 100_000
            window_s = args.window / 2 if big else args.window
            what = f"{count:,} apps{' with both tickets' if with_tickets else ''}"
            print(f"{what}: filling, then {window_s:.0f} s steady state ...", flush=True)
            row = run_size(
                count,
                window_s=window_s,
                fill_timeout_s=240 if big else 120,
                tmp=Path(tmp),
                with_tickets=with_tickets,
            )
            rows.append(row)
            print(f"  done: {row}", flush=True)
    print_table(rows)


if __name__ == "__main__":
    main()
