"""`make demo`'s pre-flight: it finds every endpoint and says how to start what is down."""

from __future__ import annotations

import io
import logging
import os
import re
import shutil
import stat
import subprocess
import threading
from pathlib import Path

import pytest

from ops._demo_children import relay, say
from ops.demo import endpoints, main, write_env_file


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://127.0.0.1:6379/0", [("127.0.0.1", 6379)]),
        ("redis+sentinel://s1:26380,s2/wxm", [("s1", 26380), ("s2", 26379)]),
        ("amqp://u:p@mq1:5673/%2F,amqps://u:p@mq2/%2F", [("mq1", 5673), ("mq2", 5671)]),
    ],
)
def test_endpoints_of_every_url_form(url: str, expected: list[tuple[str, int]]) -> None:
    """Plain, sentinel and multi-broker URLs all yield their host:port pairs."""
    assert endpoints(url) == expected


def test_demo_says_how_to_start_an_unreachable_redis(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: object
) -> None:
    """With nothing listening where Redis should be, the demo exits 1 and says what to run."""
    monkeypatch.chdir(str(tmp_path))
    monkeypatch.setenv("WXTOKEN_REDIS_URL", "redis://127.0.0.1:1/0")
    monkeypatch.setenv("WXTOKEN_AMQP_URL", "amqp://guest:guest@127.0.0.1:1/%2F")
    pika_logger = logging.getLogger("pika")
    monkeypatch.setattr(pika_logger, "level", pika_logger.level)  # main() quiets pika
    assert main([]) == 1
    err = capsys.readouterr().err
    assert "Redis is not reachable" in err
    assert "redis-server" in err
    assert "rabbitmq-server" in err


def test_lease_ttl_fits_inside_the_refresh_margin() -> None:
    """The demo's lease TTL is shorter than the refresh margin, so no takeover warning."""
    from ops.demo import lease_ttl_for

    for expires_in_s in (10, 30, 60, 7200):
        margin_s = min(0.2 * expires_in_s, 300.0)
        assert 1.0 <= lease_ttl_for(expires_in_s) < margin_s


def test_env_file_sources_to_the_same_values(tmp_path: Path) -> None:
    """Values with spaces, quotes and `$` come back unchanged from `set -a; . FILE`."""
    values = {"WXTOKEN_A": "plain", "WXTOKEN_B": "with space 'and' \"quotes\" $HOME"}
    env_file = write_env_file(tmp_path / "demo.env", values)
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    shown = subprocess.run(
        [shutil.which("bash") or "/bin/bash", "-c", f"set -a; . {env_file}; set +a; env"],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": os.environ.get("PATH", "")},
    ).stdout.splitlines()
    for name, value in values.items():
        assert f"{name}={value}" in shown


def test_lines_from_many_threads_never_run_together() -> None:
    """Each `say` is one whole line, whichever threads print at once."""
    out = io.StringIO()

    def talk(who: str) -> None:
        for n in range(200):
            say(who, f"line {n} " + "x" * 50, out=out)

    threads = [threading.Thread(target=talk, args=(f"t{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    lines = out.getvalue().splitlines()
    assert len(lines) == 800
    assert all(re.fullmatch(r"\d\d:\d\d:\d\d +t\d \| line \d+ x{50}", line) for line in lines)


def test_relay_drops_routine_lines_and_the_childs_timestamp(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Re-publishes and plumbing are dropped; a refresh is kept without its own time."""
    child_log = io.StringIO(
        "2026-12-01 09:00:00,000 INFO producer.messaging.publisher: published wx1/access_token v2\n"
        "2026-12-01 09:00:01,000 INFO producer.refresh.refresher: "
        "wx1: fetched wx1/access_token v3\n"
        "\n"
        "Traceback (most recent call last):\n"
    )
    relay(child_log, "producer")
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert lines[0].endswith(
        "producer | INFO producer.refresh.refresher: wx1: fetched wx1/access_token v3"
    )
    assert lines[1].endswith("producer | Traceback (most recent call last):")
