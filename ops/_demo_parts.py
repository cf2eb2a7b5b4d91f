"""The pieces of `make demo` that are not its story: one locked printer, the relay of a
child's log, the env file its suggested commands use, the exchanges, the gateway, the line
of a jsapi ticket with its JS-SDK signature."""

from __future__ import annotations

import shlex
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO

from consumer_lib import TokenUpdate
from consumer_lib.amqp import Connection, connection_parameters
from consumer_lib.jssdk import jssdk_signature, new_nonce
from consumer_lib.settings import ClientSettings

from .sandbox import SandboxServer

_PRINT_LOCK = threading.Lock()

#: Producer log lines a newcomer need not read (re-publishes every few seconds, plumbing).
QUIET = (
    "producer.messaging.publisher: published",
    "producer.messaging.publisher: publisher connected",
    "producer.messaging.request_listener: listening",
    "metrics and health on port",
)


def say(who: str, text: str, *, out: IO[str] | None = None) -> None:
    """One whole line, never interleaved with another thread's."""
    line = f"{time.strftime('%H:%M:%S')} {who:>10} | {text}\n"
    stream = out or sys.stdout
    with _PRINT_LOCK:
        stream.write(line)
        stream.flush()


def relay(stream: IO[str], who: str, *, quiet: tuple[str, ...] = QUIET) -> None:
    """Echo a child's log lines without their own timestamp, dropping the routine ones."""
    for raw in stream:
        text = raw.rstrip("\n")
        if not text or any(q in text for q in quiet):
            continue
        say(who, text.split(" ", 2)[-1] if text[:4].isdigit() else text)


def write_env_file(path: Path, env: Mapping[str, str]) -> Path:
    """`KEY='value'` lines a shell can source (`set -a; . FILE; set +a`); mode 0600."""
    path.write_text("".join(f"{k}={shlex.quote(v)}\n" for k, v in sorted(env.items())))
    path.chmod(0o600)
    return path


def declare_exchanges(settings: ClientSettings) -> None:
    """Create the tokens and requests exchanges, so the subscriber starting before the
    producer finds them (no NOT_FOUND from the broker); `BrokerError` if unreachable."""
    params = connection_parameters(settings.amqp_url, connection_name="wxtoken-demo/setup")
    connection = Connection.open(params, what="cannot reach RabbitMQ")
    try:
        channel = connection.channel()
        channel.declare_exchange(settings.exchange)
        channel.declare_requests_exchange(settings.exchange)
    finally:
        connection.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_child(module: str, env: Mapping[str, str], who: str) -> subprocess.Popen[str]:
    """`python -m module` with its stderr relayed line by line as `who`."""
    child = subprocess.Popen(
        [sys.executable, "-m", module], env=dict(env), stderr=subprocess.PIPE, text=True
    )
    assert child.stderr is not None
    threading.Thread(target=relay, args=(child.stderr, who), daemon=True).start()
    return child


def wait_until(check: Callable[[], bool], timeout_s: float, stop: threading.Event) -> bool:
    """Poll `check` every 0.2 s until it is true, `stop` is set or `timeout_s` passes."""
    deadline = time.monotonic() + timeout_s
    while not stop.is_set() and time.monotonic() < deadline:
        try:
            if check():
                return True
        except OSError:
            pass
        stop.wait(0.2)
    return False


#: The H5 page the demo signs a `wx.config` for with the jsapi ticket.
DEMO_PAGE_URL = "https://h5.example.com/pay?order=42"


def ticket_line(update: TokenUpdate, sandbox: SandboxServer, *, now_s: float) -> str:
    """What the subscriber says of a jsapi ticket: it, and a JS-SDK signature made with it
    for `DEMO_PAGE_URL`, checked by the sandbox as WeChat checks `wx.config`."""
    nonce, timestamp = new_nonce(), int(now_s)
    signature = jssdk_signature(update.value, nonce, timestamp, DEMO_PAGE_URL)
    valid = sandbox.state.verify_signature(
        update.app_id, "jsapi", DEMO_PAGE_URL, nonce, str(timestamp), signature
    )
    return (
        f"{update.app_id} {update.kind} v{update.version} {update.masked}, "
        f"{update.seconds_left(now_s):.1f} s left; JS-SDK signature {signature[:12]}... "
        f"for {DEMO_PAGE_URL}: {'valid' if valid else 'INVALID'}"
    )
