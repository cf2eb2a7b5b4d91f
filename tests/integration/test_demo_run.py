"""`make demo` (`python -m ops.demo`) for real: the first minute a newcomer sees.

Only the sandbox, the producer's refreshes, the subscriber's tokens and the gateway show;
no pika lines, no lease warning, one line per line; and every command it suggests works
when pasted into a shell as printed.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator

import pika
import pytest

from tests.conftest import AMQP_URL
from tests.integration.procs import REPO_ROOT
from tests.waiting import wait_for

LINE = re.compile(
    r"^\d\d:\d\d:\d\d +(sandbox|demo|producer|subscriber|gateway|platform|receiver) \| .*\S"
)
BASH = shutil.which("bash") or "/bin/bash"
CURL = shutil.which("curl") or "/usr/bin/curl"
TIMESTAMP = re.compile(r"\d\d:\d\d:\d\d +[a-z]+ \|")


@pytest.fixture
def demo(redis_url: str, amqp_url: str, isolation: dict[str, str]) -> Iterator[list[str]]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ops.demo",
            "--duration",
            "120",
            "--key-prefix",
            isolation["key_prefix"],
            "--exchange",
            isolation["exchange"],
        ],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    yield lines
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        proc.wait(20)
    reader.join(5)
    assert proc.stdout is not None
    proc.stdout.close()
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    connection.channel().exchange_delete(f"{isolation['exchange']}.requests")
    connection.close()


def _suggested_platform_status(lines: list[str]) -> str:
    found = next(line for line in lines if line.endswith("wxtoken platform status"))
    return found.split("|", 1)[1].strip()


def _suggested(lines: list[str]) -> list[str]:
    """The commands printed after 'paste:', as printed."""
    start = next(i for i, line in enumerate(lines) if line.endswith("in another shell, paste:"))
    return [line.split("|", 1)[1].strip() for line in lines[start + 1 : start + 4]]


def test_first_minute(demo: list[str]) -> None:
    """Refreshes, tokens and the gateway's answer show; the pasted commands work."""
    wait_for(
        lambda: any("gateway | curl above -> 200" in line for line in demo),
        timeout_s=60,
        message="the gateway answering the demo's curl",
    )
    wait_for(
        lambda: sum("WeChat: accepted" in line for line in demo) >= 2,
        timeout_s=30,
        message="both apps' tokens at the subscriber",
    )
    signed = wait_for(
        lambda: next((line for line in demo if "JS-SDK signature" in line), None),
        timeout_s=30,
        message="the jsapi ticket and its signature at the subscriber",
    )
    print(f"\n[demo] {signed}")
    assert signed.endswith(": valid"), signed
    # The platform: two customers served from the start, a third authorizing meanwhile.
    late = "wxdemoplatform0001.wxdemocust00000002"
    arrived = wait_for(
        lambda: next((line for line in demo if f"subscriber | {late} v" in line), None),
        timeout_s=60,
        message="the customer who authorized during the demo, at the subscriber",
    )
    assert arrived.endswith("WeChat: accepted"), arrived
    for customer in ("wxdemocust00000000", "wxdemocust00000001"):
        assert any(f"wxdemoplatform0001.{customer} v" in line for line in demo), customer
    source, status, curl = _suggested(demo)
    assert source.startswith("set -a; . ")
    assert source.endswith("; set +a")
    assert status.endswith("wxtoken status")
    assert curl.startswith("curl ")
    platform_status = _suggested_platform_status(demo)
    shell = f"{source}\n{status}\n{platform_status} --json\n"
    done = subprocess.run([BASH, "-c", shell], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "wxdemo0000000001" in done.stdout
    assert '"authorized": 3' in done.stdout, done.stdout
    fetched = subprocess.run(
        [BASH, "-c", f"{source}\n{curl}"], capture_output=True, text=True, timeout=60
    )
    assert fetched.returncode == 0, fetched.stderr
    assert '"access_token"' in fetched.stdout
    metrics_line = next(line for line in demo if "metrics: " in line)
    for url in re.findall(r"http://127\.0\.0\.1:\d+/metrics", metrics_line):
        scraped = subprocess.run([CURL, "-sf", url], capture_output=True, text=True, timeout=30)
        assert scraped.returncode == 0, url
        assert "wxtoken_" in scraped.stdout

    text = "\n".join(demo)
    print(text)
    assert "pika" not in text
    assert "NOT_FOUND" not in text
    assert "lease TTL" not in text
    assert "inline secret" not in text
    for line in demo:
        assert LINE.match(line), line
        assert len(TIMESTAMP.findall(line)) == 1, f"two lines run together: {line}"
