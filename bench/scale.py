"""How one producer copes with 1,000, 10,000 and 100,000 apps, against the local services.

    .venv/bin/python bench/scale.py                 # the whole table (a few minutes)
    .venv/bin/python bench/scale.py --apps 10000    # one size

For each size: a stand-in WeChat (the sandbox, in a child process, on loopback), real
producer processes (`python -m producer`) against the local Redis and RabbitMQ with a
unique key prefix and exchange, a raw pika consumer of the exchange in this process, and
one subscriber process (`TokenClient`) holding every app. It measures:

- fill: seconds from starting the leader on an empty Redis until every token is there;
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
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pika
import redis

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

REDIS_URL = os.environ.get("WXTOKEN_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
AMQP_URL = os.environ.get("WXTOKEN_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
SECRET = "benchsecret0123456789abcdef"
LEASE_TTL_S = 5
TICKS_S = os.sysconf("SC_CLK_TCK")


# ------------------------------------------------------------------ child modes
def serve_sandbox(apps_json: str) -> None:
    """Child mode: the sandbox for the given app ids; prints its base URL, runs until killed."""
    from ops._sandbox import SandboxConfig, SandboxServer

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


# ------------------------------------------------------------------ measuring
def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICKS_S  # utime + stime


def proc_status(pid: int) -> dict[str, int]:
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("Threads", "VmRSS"):
            found[name] = int(value.split()[0])
    return found


@dataclass
class Usage:
    cpu_pct: float
    rss_mib: float
    threads: int


def measure(pids: dict[str, int], window_s: float) -> dict[str, Usage]:
    before = {name: proc_cpu_s(pid) for name, pid in pids.items()}
    start = time.monotonic()
    most_threads = dict.fromkeys(pids, 0)
    while time.monotonic() - start < window_s:
        for name, pid in pids.items():
            most_threads[name] = max(most_threads[name], proc_status(pid)["Threads"])
        time.sleep(0.5)
    elapsed = time.monotonic() - start
    return {
        name: Usage(
            cpu_pct=100 * (proc_cpu_s(pid) - before[name]) / elapsed,
            rss_mib=proc_status(pid)["VmRSS"] / 1024,
            threads=most_threads[name],
        )
        for name, pid in pids.items()
    }


class RawConsumer:
    """A raw pika consumer of the exchange in a thread: which apps it has seen, and when."""

    def __init__(self, exchange: str) -> None:
        self._exchange = exchange
        self.seen: set[str] = set()
        self.messages = 0
        self.last_at = 0.0
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._ready.wait(10)

    def _run(self) -> None:
        connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
        channel = connection.channel()
        channel.exchange_declare(self._exchange, "fanout", durable=True)
        queue = channel.queue_declare("", exclusive=True).method.queue
        channel.queue_bind(queue, self._exchange)

        def on_message(_ch: Any, _method: Any, properties: Any, _body: bytes) -> None:
            self.messages += 1
            self.seen.add(str(properties.message_id).partition(":")[0])
            self.last_at = time.monotonic()

        channel.basic_consume(queue, on_message, auto_ack=True)
        self._ready.set()
        while not self._stop.is_set():
            connection.process_data_events(time_limit=0.2)
        connection.close()

    def reset(self) -> None:
        self.seen = set()
        self.messages = 0

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)


def raw_publish_baseline(count: int) -> float:
    """Seconds for a raw pika publisher with confirms to send `count` 700-byte messages."""
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    channel = connection.channel()
    exchange = f"bench.raw.{uuid.uuid4().hex[:8]}"
    channel.exchange_declare(exchange, "fanout", auto_delete=True)
    channel.confirm_delivery()
    body = b"x" * 700
    started = time.monotonic()
    for n in range(count):
        channel.basic_publish(exchange, "", body, pika.BasicProperties(message_id=str(n)))
    elapsed = time.monotonic() - started
    channel.exchange_delete(exchange)
    connection.close()
    return elapsed


def read_line(child: subprocess.Popen[str], timeout_s: float) -> str:
    """The child's next stdout line, or "" after `timeout_s`."""
    assert child.stdout is not None
    readable, _, _ = select.select([child.stdout], [], [], timeout_s)
    return child.stdout.readline().strip() if readable else ""


def wait_until(condition: Callable[[], bool], timeout_s: float, step_s: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step_s)
    return condition()


def upstream_calls(base_url: str) -> int:
    with urllib.request.urlopen(f"{base_url}/sandbox/stats", timeout=30) as answer:  # noqa: S310
        stats = json.load(answer)
    return sum(sum(kinds.values()) for kinds in stats["fetches"].values())


# ------------------------------------------------------------------ one size
@dataclass
class Row:
    apps: int
    fill_s: float | None = None
    filled: int = 0
    leader: Usage | None = None
    standby: Usage | None = None
    subscriber: Usage | None = None
    max_threads: int = 0
    takeover_s: float | None = None
    takeover_from_kill_s: float | None = None
    takeover_seen: int = 0
    takeover_calls: int | None = None
    stop_s: float | None = None
    raw_publish_s: float = 0.0
    notes: list[str] = field(default_factory=list)


def run_size(count: int, *, window_s: float, fill_timeout_s: float, tmp: Path) -> Row:
    row = Row(count)
    tag = uuid.uuid4().hex[:8]
    prefix, exchange = f"bench-scale-{tag}", f"bench.scale.{tag}"
    app_ids = [f"wxb{tag}{n:09d}" for n in range(count)]
    (tmp / "apps.json").write_text(json.dumps(app_ids))
    apps_file = tmp / f"apps-{tag}.toml"
    apps_file.write_text(
        "".join(f'[[apps]]\napp_id = "{a}"\nsecret_env = "BENCH_SECRET"\n' for a in app_ids)
    )
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
        leader = spawn(["-m", "producer"], {**producer_env, "WXTOKEN_PRODUCER_ID": "a"}, "a.log")
        threads_seen = [0]

        def filled() -> bool:
            threads_seen[0] = max(threads_seen[0], proc_status(leader.pid)["Threads"])
            return int(client.scard(known)) >= count

        if wait_until(filled, fill_timeout_s, step_s=0.25):
            row.fill_s = time.monotonic() - started
        row.filled = int(client.scard(known))
        standby = spawn(["-m", "producer"], {**producer_env, "WXTOKEN_PRODUCER_ID": "b"}, "b.log")
        subscriber = spawn([__file__, "--subscriber", str(row.filled)], common, "sub.log")
        ready = read_line(subscriber, 120) == "ready"
        if not ready:
            row.notes.append("subscriber did not get ready")
        time.sleep(6)  # the standby's first batched reads
        if os.environ.get("BENCH_PYSPY"):  # a profile of the leader's steady state
            subprocess.Popen(
                [
                    os.environ["BENCH_PYSPY"],
                    "record",
                    "-d",
                    str(int(window_s)),
                    "-p",
                    str(leader.pid),
                    "-o",
                    str(tmp.parent / f"leader-{count}.svg"),
                    "-r",
                    "50",
                ]
            )
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


# ------------------------------------------------------------------ the table
def show(value: float | None, fmt: str = "{:.1f}") -> str:
    return "-" if value is None else fmt.format(value)


def print_table(rows: list[Row]) -> None:
    print()
    print(f"os.cpu_count() = {os.cpu_count()}; load average now {os.getloadavg()[0]:.2f}")
    header = ["measure", *[f"{r.apps:,} apps" for r in rows], "goal (10,000)"]
    lines = [
        [
            "all tokens in Redis from empty, s",
            *[show(r.fill_s) if r.fill_s else f"{r.filled:,} only" for r in rows],
            "<= 60",
        ],
        ["producer threads (most seen)", *[str(r.max_threads) for r in rows], "<= 32"],
        ["leader CPU, % of one core", *[show(r.leader and r.leader.cpu_pct) for r in rows], "<= 5"],
        [
            "leader RSS, MiB",
            *[show(r.leader and r.leader.rss_mib, "{:.0f}") for r in rows],
            "<= 250",
        ],
        [
            "standby CPU, % of one core",
            *[show(r.standby and r.standby.cpu_pct) for r in rows],
            "<= 2",
        ],
        ["standby RSS, MiB", *[show(r.standby and r.standby.rss_mib, "{:.0f}") for r in rows], ""],
        ["takeover after the lease, s", *[show(r.takeover_s, "{:.2f}") for r in rows], "<= 5"],
        [
            "  ... from the SIGKILL, s",
            *[show(r.takeover_from_kill_s, "{:.2f}") for r in rows],
            f"<= {LEASE_TTL_S} + 5",
        ],
        ["  apps re-published / held", *[f"{r.takeover_seen:,}/{r.filled:,}" for r in rows], "all"],
        ["  upstream calls during takeover", *[str(r.takeover_calls) for r in rows], "0"],
        [
            "  baseline: raw confirmed publish, s",
            *[show(r.raw_publish_s, "{:.2f}") for r in rows],
            "",
        ],
        [
            "  takeover / baseline",
            *[
                show(
                    r.takeover_s / r.raw_publish_s if r.takeover_s and r.raw_publish_s else None,
                    "{:.1f}x",
                )
                for r in rows
            ],
            "",
        ],
        [
            "subscriber CPU, % of one core",
            *[show(r.subscriber and r.subscriber.cpu_pct) for r in rows],
            "<= 3",
        ],
        [
            "subscriber RSS, MiB",
            *[show(r.subscriber and r.subscriber.rss_mib, "{:.0f}") for r in rows],
            "<= 150",
        ],
        ["clean stop on SIGTERM, s", *[show(r.stop_s, "{:.2f}") for r in rows], "<= 2"],
    ]
    widths = [max(len(line[i]) for line in [header, *lines]) for i in range(len(header))]
    for line in [header, ["-" * w for w in widths], *lines]:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)))
    base = rows[0]
    for row in rows[1:]:
        if base.leader and row.leader:
            print(
                f"growth {base.apps:,} -> {row.apps:,} apps: leader CPU x"
                f"{row.leader.cpu_pct / max(base.leader.cpu_pct, 0.01):.1f}, RSS x"
                f"{row.leader.rss_mib / base.leader.rss_mib:.1f}"
            )
    for row in rows:
        for note in row.notes:
            print(f"note ({row.apps:,} apps): {note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--apps", default="1000,10000,100000", help="comma-separated sizes")
    parser.add_argument("--window", type=float, default=20.0, help="steady-state seconds")
    parser.add_argument("--serve-sandbox", help=argparse.SUPPRESS)
    parser.add_argument("--subscriber", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_sandbox:
        serve_sandbox(args.serve_sandbox)
        return
    if args.subscriber is not None:
        run_subscriber(args.subscriber)
        return
    sizes = [int(s) for s in args.apps.split(",")]
    print(f"os.cpu_count() = {os.cpu_count()}; load average {os.getloadavg()}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="wxtoken-bench-") as tmp:
        for count in sizes:
            big = count >= 100_000
            window_s = args.window / 2 if big else args.window
            print(f"{count:,} apps: filling, then {window_s:.0f} s steady state ...", flush=True)
            row = run_size(
                count, window_s=window_s, fill_timeout_s=240 if big else 120, tmp=Path(tmp)
            )
            rows.append(row)
            print(f"  done: {row}", flush=True)
    print_table(rows)


if __name__ == "__main__":
    main()
