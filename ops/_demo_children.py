"""`make demo`'s child processes (the producer, the gateway, the platform's receiver) and
the console they share with the demo: every line printed whole through one lock, a child's
log relayed line by line without the routine ones, a free local port for a child to listen
on. `ops.demo` and `ops._demo_platform` both start children and print through it."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from typing import IO

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


def free_port() -> int:
    """A local TCP port free now, for a child to listen on."""
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
