"""The gateway's stream (`GET /v1/stream`): its fan-out against the broker's, idle streams'
cost, and a reader 30 s behind. One run, one machine; prints figures, asserts nothing.

    fan-out  the sandbox WeChat (its own process, short classic tokens), one producer
             (signing), one gateway; N subscriber processes holding a `TokenClient` on the
             broker and N holding one over HTTP on the gateway's stream (both verifying).
             Latency of a token: the moment the last subscriber of a side saw it (its
             `on_update` callback), minus the moment the sandbox answered the fetch.
    slow     meanwhile one more stream reader with a 4 KiB receive buffer reads nothing for
             30 s, then reads: which versions it gets, against the newest; the others'
             latency while it lags is the fan-out figure above.
    idle     then the gateway's RSS and CPU with M more streams open that carry nothing
             (a key whose apps match none) but heartbeats.

Needs the local Redis and RabbitMQ.

    .venv/bin/python bench/stream.py [--subscribers 50] [--apps 10] [--seconds 40] [--idle 2000]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import queue
import socket
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
sys.path.insert(0, str(Path(__file__).resolve().parent))

import pika
import redis
from _fanout_report import cpu_s, percentile
from _fanout_sides import (
    AMQP_URL,
    EXPIRES_IN_S,
    REDIS_URL,
    sandbox_process,
    seed_staggered,
    wx_subscriber,
)

from consumer_lib import TokenClient
from consumer_lib._client.sse import SseParser
from consumer_lib.amqp import declare_exchange
from consumer_lib.settings import GatewayClientSettings
from consumer_lib.wire.signing import generate_keypair
from ops.gateway import add_key

ROOT = Path(__file__).resolve().parents[1]
SLOW_S = 30.0


def http_subscriber(number: int, settings: dict[str, Any], out: Any, stop: Event) -> None:
    """A service process: a TokenClient over the gateway's stream, reporting each token."""
    client = TokenClient.over_http(GatewayClientSettings(**settings), name=f"wxbench-http-{number}")
    client.on_update(lambda update: out.put(("http", number, update.value, time.time())))
    with client:
        if client.wait_connected(30):
            out.put(("ready", number, "http", 0.0))
        stop.wait()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _open_stream(port: int, key: str, query: str, rcvbuf: int | None = None) -> socket.socket:
    sock = socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect(("127.0.0.1", port))
    sock.sendall(
        f"GET /v1/stream{query} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {key}\r\n"
        "Accept: text/event-stream\r\n\r\n".encode()
    )
    return sock


def _read_all(sock: socket.socket, seconds: float) -> bytes:
    """Read what the socket has for `seconds`."""
    sock.settimeout(0.2)
    data = bytearray()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        if not chunk:
            break
        data += chunk
    return bytes(data)


def _versions(raw: bytes) -> list[int]:
    """The versions of the update events in `raw` (SSE), in order."""
    parser = SseParser()
    found = []
    for line in raw.split(b"\n"):
        event = parser.feed(line)
        if event is not None and event.event == "update":
            found.append(int(json.loads(json.loads(event.data)["payload"])["version"]))
    return found


class _Reference(threading.Thread):
    """A stream reader that keeps up: what was sent while the slow one lagged."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(daemon=True)
        self.sock = sock
        self.data = bytearray()
        self.stop = threading.Event()

    def run(self) -> None:
        self.sock.settimeout(0.2)
        while not self.stop.is_set():
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                return
            self.data += chunk


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=50)
    parser.add_argument("--apps", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=40.0, help="fan-out measurement")
    parser.add_argument("--idle", type=int, default=2000, help="idle streams")
    args = parser.parse_args()
    ctx = mp.get_context("fork")
    tag = uuid.uuid4().hex[:8]
    prefix, exchange = f"wxbench-{tag}", f"wxbench.{tag}"
    tmp = Path(tempfile.mkdtemp(prefix="wxbench-stream-"))
    private_key, public_key = generate_keypair(tmp / "signing")
    keys_file = tmp / "keys.json"
    key = add_key(keys_file, "bench", apps=["wxbench*"], scopes=["read"])
    # Opening 2,000 streams at once is 2,000 requests: past the default rate (429).
    idle_key = add_key(
        keys_file, "idle", apps=["idle-nothing*"], scopes=["read"], rate_per_s=100_000
    )
    admin = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    declare_exchange(admin.channel(), exchange)
    apps = {f"wxbench{n:010d}": f"secret-{n}" for n in range(args.apps)}
    interval_s = EXPIRES_IN_S * 0.8 / args.apps
    seed_staggered(apps, prefix, private_key, interval_s)
    base_env = {
        **os.environ,
        "WXTOKEN_REDIS_URL": REDIS_URL,
        "WXTOKEN_AMQP_URL": AMQP_URL,
        "WXTOKEN_EXCHANGE": exchange,
        "WXTOKEN_KEY_PREFIX": prefix,
        "WXTOKEN_VERIFY_KEYS": str(public_key),
    }
    port = _free_port()
    gateway_log = (tmp / "gateway.log").open("w")
    gateway = subprocess.Popen(
        [sys.executable, "-m", "ops.gateway"],
        cwd=ROOT,
        env={
            **base_env,
            "WXTOKEN_GATEWAY_KEYS_FILE": str(keys_file),
            "WXTOKEN_GATEWAY_PORT": str(port),
            "WXTOKEN_GATEWAY_STREAM_MAX_PER_KEY": str(args.idle + args.subscribers + 10),
            "WXTOKEN_GATEWAY_STREAM_WRITE_TIMEOUT_S": str(SLOW_S * 4),
            "WXTOKEN_LOG_LEVEL": "WARNING",
        },
        stdout=gateway_log,
        stderr=gateway_log,
    )
    broker_settings = {
        "redis_url": REDIS_URL,
        "amqp_url": AMQP_URL,
        "exchange": exchange,
        "key_prefix": prefix,
        "verify_keys": str(public_key),
    }
    http_settings = {
        "gateway_url": f"http://127.0.0.1:{port}",
        "gateway_api_key": key,
        "verify_keys": str(public_key),
    }
    out: Any = ctx.Queue()
    stop = ctx.Event()
    children = (
        [ctx.Process(target=sandbox_process, args=(apps, out, stop), daemon=True)]
        + [
            ctx.Process(target=wx_subscriber, args=(n, broker_settings, out, stop), daemon=True)
            for n in range(args.subscribers)
        ]
        + [
            ctx.Process(target=http_subscriber, args=(n, http_settings, out, stop), daemon=True)
            for n in range(args.subscribers)
        ]
    )
    producer: subprocess.Popen[bytes] | None = None
    try:
        for child in children:
            child.start()
        ready, base_url = 0, ""
        while ready < 2 * args.subscribers or not base_url:
            kind, _, what, _ = out.get(timeout=180)
            ready += kind == "ready"
            base_url = what if kind == "sandbox" else base_url
        print(f"{args.subscribers} broker and {args.subscribers} stream subscribers ready")
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
                **base_env,
                "WXTOKEN_SIGNING_KEY_FILE": str(private_key),
                "WXTOKEN_APPS_FILE": str(apps_file),
                "WXTOKEN_WECHAT_BASE_URL": base_url,
                "WXTOKEN_LEASE_TTL_S": "1.5",
            },
            stdout=producer_log,
            stderr=producer_log,
        )
        received: dict[tuple[str, str], dict[int, float]] = defaultdict(dict)
        answered: dict[str, float] = {}

        def collect() -> None:
            while not stop.is_set():
                try:
                    kind, number, value, at = out.get(timeout=0.5)
                except queue.Empty:
                    continue
                if kind == "answered":
                    answered[value] = at
                elif kind in ("wx", "http"):
                    received[(kind, value)].setdefault(number, at)

        collector = threading.Thread(target=collect, daemon=True)
        collector.start()
        time.sleep(EXPIRES_IN_S + 2.0)  # past the first fetches
        measure_from = time.time()
        # The slow reader: a small receive buffer, nothing read for SLOW_S; and one that
        # keeps up, on the same app, to count what was sent meanwhile.
        first_app = next(iter(apps))
        slow = _open_stream(port, key, f"?apps={first_app}", rcvbuf=4096)
        reference = _Reference(_open_stream(port, key, f"?apps={first_app}"))
        reference.start()
        slow_first = _read_all(slow, 2.0)
        reference_before = len(_versions(bytes(reference.data)))
        time.sleep(max(args.seconds, SLOW_S + 2))
        reference_lag = _versions(bytes(reference.data))[reference_before:]
        slow_rest = _read_all(slow, 2.0)
        reference.stop.set()
        measure_to = time.time() - 1.0
        slow.close()

        def latencies(kind: str) -> tuple[list[float], int]:
            figures, missing = [], 0
            for value, at in answered.items():
                if not measure_from <= at <= measure_to:
                    continue
                got = received.get((kind, value), {})
                if len(got) < args.subscribers:
                    missing += 1
                    continue
                figures.append((max(got.values()) - at) * 1000)
            return figures, missing

        print(f"cores: {os.cpu_count()}; logs in {tmp}")
        results = {}
        for name, kind in (("broker", "wx"), ("stream", "http")):
            figures, missing = latencies(kind)
            results[kind] = figures
            if figures:
                print(
                    f"{name:7s} all {args.subscribers} hold it: p50 "
                    f"{percentile(figures, 0.5):6.1f} ms  p99 {percentile(figures, 0.99):6.1f} ms "
                    f"({len(figures)} tokens, {missing} not seen by all)"
                )
            else:
                print(f"{name}: nothing complete measured ({missing} incomplete)")
        if results["wx"] and results["http"]:
            ratio = percentile(results["http"], 0.99) / percentile(results["wx"], 0.99)
            print(f"ratio stream/broker p99: {ratio:.2f} (goal <= 1.5)")
        after = _versions(slow_rest)
        print(
            f"slow reader ({SLOW_S:.0f} s unread, 4 KiB receive buffer) on {first_app}: "
            f"{len(_versions(slow_first))} event(s) read before it lagged; "
            f"{len(reference_lag)} version(s) sent meanwhile to a reader keeping up "
            f"(newest v{max(reference_lag, default=0)}); the slow one then got "
            f"{len(after)} event(s): {after}"
        )
        # Idle streams: the gateway's RSS and CPU with args.idle of them open.
        rss_before = _rss_mib(gateway.pid)
        idle = [_open_stream(port, idle_key, "") for _ in range(args.idle)]
        time.sleep(3.0)
        cpu_from = cpu_s([gateway.pid])
        time.sleep(30.0)
        cpu_pct = (cpu_s([gateway.pid]) - cpu_from) / 30.0 * 100
        rss_after = _rss_mib(gateway.pid)
        open_ok = sum(1 for s in idle if _status_ok(s))
        print(
            f"idle: {open_ok}/{args.idle} streams open: gateway RSS {rss_before:.0f} -> "
            f"{rss_after:.0f} MiB, CPU {cpu_pct:.1f} % of a core over 30 s (with the "
            f"{args.subscribers} live streams and the producer's refreshes going on)"
        )
        for sock in idle:
            sock.close()
    finally:
        stop.set()
        if producer is not None:
            producer.terminate()
            producer.wait(10)
        gateway.terminate()  # open streams are cut after the gateway's shutdown grace
        try:
            gateway.wait(30)
        except subprocess.TimeoutExpired:
            gateway.kill()
            gateway.wait(10)
        for child in children:
            child.join(5)
            if child.is_alive():
                child.kill()
        client = redis.Redis.from_url(REDIS_URL)
        stale = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if stale:
            client.delete(*stale)
        admin.channel().exchange_delete(exchange)
        admin.channel().exchange_delete(exchange + ".requests")
        admin.close()
    return 0


def _status_ok(sock: socket.socket) -> bool:
    sock.settimeout(0.5)
    try:
        head = sock.recv(64)
    except OSError:
        return False
    return head.startswith(b"HTTP/1.1 200")


if __name__ == "__main__":
    sys.exit(main())
