"""Passive refresh: subscribers report a token WeChat rejected; the leader refreshes once.

The sandbox revokes the token first: the leader checks a reported token upstream before it
refreshes, and a token upstream still accepts is not refreshed (tests/integration/
test_request_flood.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.waiting import wait_for

from .procs import REPO_ROOT
from .stack import make_stack

PROCESSES = 20
REPORTS_EACH = 10


class Reporter:
    def __init__(self, env: dict[str, str], app_id: str, log_path: Path) -> None:
        self._log = log_path.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.reporter_proc", app_id, str(REPORTS_EACH)],
            cwd=REPO_ROOT,
            env={**os.environ, **env},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )
        self.events: list[dict[str, Any]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                self.events.append(json.loads(line))
            except ValueError:
                self.events.append({"event": "unparsable", "line": line})

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in list(self.events) if e["event"] == kind]

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(10)
        self._reader.join(5)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()
        self._log.close()


@pytest.mark.slow
def test_two_hundred_reports_cause_one_refresh(
    tmp_path: Path, service_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """200 reports of the same (revoked) token from 20 processes at once cost exactly one
    upstream fetch, each process sends at most one request, and every process then holds the new
    token (how soon is printed: it depends on the machine's load)."""
    stack = make_stack(
        tmp_path, service_env, token_api="stable", expires_in_s=120, overlap_s=30, app_count=1
    )
    app_id = stack.app_ids[0]
    reporters: list[Reporter] = []
    try:
        stack.producer()
        wait_for(lambda: stack.snapshot(app_id), timeout_s=20, message="a token in Redis")
        reporters = [
            Reporter(stack.service_env, app_id, tmp_path / f"reporter-{n}.log")
            for n in range(PROCESSES)
        ]
        wait_for(
            lambda: all(r.of("ready") for r in reporters),
            timeout_s=90,
            message="every reporter holding the token",
        )
        old = stack.snapshot(app_id)
        assert old is not None
        issued_before = stack.issued(app_id)
        assert stack.sandbox.state.invalidate(app_id)  # WeChat now refuses the held token
        for reporter in reporters:
            reporter.go()
        wait_for(
            lambda: all(r.of("reported") for r in reporters),
            timeout_s=30,
            message="every reporter done reporting",
        )
        wait_for(
            lambda: all(any(e["version"] > old.version for e in r.of("update")) for r in reporters),
            timeout_s=30,
            message="every reporter holding a newer token",
        )
        new = stack.snapshot(app_id)
        assert new is not None
        arrivals = [
            min(e["t"] for e in r.of("update") if e["version"] > old.version) for r in reporters
        ]
        latency_s = max(arrivals) - new.issued_at
        # A process already pushed the new token has nothing to report (report_invalid()
        # returns False): how many of the 20 did send depends on scheduling, not on us.
        sent_each = [r.of("reported")[0]["sent"] for r in reporters]
        sent = sum(sent_each)
        # Reports keep arriving for a moment after the refresh; they must not cause more.
        settle = time.monotonic() + 3
        wait_for(lambda: time.monotonic() >= settle, timeout_s=5, message="reports settling")
        fetches = stack.issued(app_id) - issued_before
        with capsys.disabled():
            print(
                f"\n[passive refresh] {PROCESSES * REPORTS_EACH} reports from {PROCESSES} "
                f"processes ({sent} requests sent after per-process de-duplication, "
                f"{sent_each.count(0)} processes already held the new token): "
                f"{fetches} upstream fetch; all processes held the new token "
                f"{latency_s * 1000:.0f} ms after it was fetched"
            )
        assert fetches == 1
        assert new.version > old.version
        assert max(sent_each) <= 1  # the ten reports of one process went out once at most
        assert sent >= 1  # and the refresh was caused by one of them
    finally:
        for reporter in reporters:
            reporter.close()
        stack.close()
