"""bench/platform_scale.py keeps working, small: a platform's authorizers all reach Redis at
a cold start and again after a FLUSHALL and a restart, none lost, on PostgreSQL and on
MariaDB (times and CPU are printed, never asserted)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.integration.platform_db import KINDS
from tests.integration.procs import REPO_ROOT


@pytest.mark.slow
@pytest.mark.parametrize("db", KINDS)
def test_bench_platform_scale_runs(db: str) -> None:
    done = subprocess.run(
        [
            *(sys.executable, "bench/platform_scale.py", "--authorizers", "300"),
            *("--window", "2", "--timeout", "90", "--db", db, "--json"),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    print(done.stdout, done.stderr[-3000:])
    assert done.returncode == 0, done.stdout + done.stderr
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["cold_start_stored"] == 300
    assert figures["cold_start_s"] is not None
    assert figures["after_flushall_lost"] == 0
    assert figures["after_flushall_s"] is not None
