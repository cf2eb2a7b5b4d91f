"""Measuring helpers of `bench/scale.py`: /proc figures, a raw pika consumer and publisher,
waiting with deadlines. Not a benchmark itself."""

from __future__ import annotations

import json
import os
import select
import subprocess
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pika

AMQP_URL = os.environ.get("WXTOKEN_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
TICKS_S = os.sysconf("SC_CLK_TCK")


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
    """A raw pika consumer of the exchange in a thread: which credentials ("app:kind") it
    has seen, and when."""

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
            self.seen.add(str(properties.message_id).rpartition(":")[0])  # app:kind:version
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
    """Every token and ticket call the sandbox answered so far."""
    with urllib.request.urlopen(f"{base_url}/sandbox/stats", timeout=30) as answer:  # noqa: S310
        stats = json.load(answer)
    tokens = sum(sum(kinds.values()) for kinds in stats["fetches"].values())
    tickets = sum(
        sum(owners.values())
        for endpoint, owners in stats["calls"].items()
        if endpoint.startswith(("getticket/", "wecom_ticket/"))
    )
    return tokens + tickets
