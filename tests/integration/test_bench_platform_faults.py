"""bench/platform_faults.py run small, on PostgreSQL and on MariaDB: issue 21's fault rows
asserted in CI.

Row 1: the leader SIGKILLed half-way through a burst of 100 authorization events loses
none: each answered `success` is stored, processed, and its token in Redis.

Row 2: the database cut for 10 s (tokens living 10 s, so each is refreshed in the cut): no
authorizer's token is missing or expired at a subscriber, no push is answered `success`
during the cut, and the refused ones are acted on once delivered again. The component
token's refresh reads the verify ticket from the database, so it cannot be refreshed during
a cut: while that holds, the row is an expected failure on that count alone.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import AMQP_URL, require_service
from tests.integration.platform_db import ADMIN_URLS, KINDS
from tests.integration.procs import REPO_ROOT
from tests.integration.servers import redis_server_binary

_ROW = re.compile(r"^\s*\| (.+?)\s+\|\s+(\S+) \|$")


def _run(db: str, row: str, logs: Path) -> tuple[int, str, dict[str, str]]:
    """Run one row small; (exit code, what it printed, its table by measure)."""
    require_service("RabbitMQ", AMQP_URL)
    require_service(db, ADMIN_URLS[db])
    redis_server_binary()
    done = subprocess.run(
        [
            *(sys.executable, "bench/platform_faults.py", "--quick", "--db", db, "--rows", row),
            *("--logs", str(logs)),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    print(done.stdout)
    print(done.stderr[-20000:], file=sys.stderr)
    table = {m[1].strip(): m[2] for line in done.stdout.splitlines() if (m := _ROW.match(line))}
    return done.returncode, done.stdout, table


@pytest.mark.slow
@pytest.mark.parametrize("db", KINDS)
def test_leader_killed_during_a_burst_loses_no_event(db: str, tmp_path: Path) -> None:
    code, printed, table = _run(db, "1", tmp_path)
    assert code == 0, printed
    assert table["pushed"] == "100"
    assert table["lost (goal 0)"] == "0"
    assert table["callbacks left unprocessed"] == "0"
    answered = int(table["answered success"])
    assert table["acted on (answered success)"] == str(answered)
    assert "verdict: 0 events lost" in printed


@pytest.mark.slow
@pytest.mark.parametrize("db", KINDS)
def test_database_cut_keeps_tokens_flowing_and_loses_nothing(db: str, tmp_path: Path) -> None:
    code, printed, table = _run(db, "2", tmp_path)
    assert table, printed  # the run got as far as its table
    assert table["authorizers' refreshed before"] == "0"
    assert table["authorizers' just authorized"] == "0"
    assert table["refused upstream (goal 0)"] == "0"
    assert table["answered success (goal 0)"] == "0"
    assert table["stored during the cut"] == "0"
    assert table["lost (goal 0)"] == "0"
    assert table["acted on after the restore"] == "4/4"
    assert table["the component token's"] == "0"
    assert code == 0, printed
