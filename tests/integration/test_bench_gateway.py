"""bench/gateway.py keeps working: one short run prints both figures, the ratio and the
core count (the figures are printed, never asserted)."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from tests.conftest import IN_CI
from tests.integration.procs import REPO_ROOT


@pytest.mark.slow
def test_bench_gateway_runs(redis_url: str, amqp_url: str) -> None:
    """A one-second run of each endpoint ends with the ratio line."""
    if shutil.which("wrk") is None:
        if IN_CI:
            pytest.fail("wrk is not installed (make tools), and CI=true requires it")
        pytest.skip("wrk is not installed (make tools)")
    done = subprocess.run(
        [sys.executable, "bench/gateway.py", "--duration-s", "1"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    print(done.stdout)
    assert done.returncode == 0, done.stderr
    assert "cores: " in done.stdout
    assert "gateway (memory, API key)" in done.stdout
    assert "Redis GET per request" in done.stdout
    assert "ratio: throughput " in done.stdout
