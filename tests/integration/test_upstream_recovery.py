"""Upstream failures around a refresh, against the sandbox with the producer's real retry
defaults: one 40164 at the refresh point costs no token (issue 19, item 1), and after an
expiry the token is back soon after upstream is (item 2). Each test prints its timeline."""

from __future__ import annotations

import re
import time
from datetime import datetime
from pathlib import Path

import pytest

from consumer_lib.wire.update import TokenUpdate
from ops.sandbox.faults import Fault
from tests.waiting import wait_for

from .procs import Producer, wait_line
from .stack import Stack, make_stack

#: The producer's real retry settings (make_stack shortens them for other tests).
REAL_RETRIES = {
    "WXTOKEN_RETRY_BASE_S": "1",
    "WXTOKEN_RETRY_CAP_S": "60",
    "WXTOKEN_CONFIG_RETRY_S": "300",
}
_STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")


def log_times(producer: Producer, pattern: str) -> list[tuple[float, str]]:
    """(UNIX time, line) of each producer log line containing `pattern`."""
    found = []
    for line in producer.stderr_text().splitlines():
        stamp = _STAMP.match(line)
        if stamp and pattern in line:
            at = datetime.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            found.append((at, line))
    return found


def newer_snapshot(stack: Stack, app_id: str, than: TokenUpdate) -> TokenUpdate | None:
    update = stack.snapshot(app_id)
    return update if update is not None and update.version > than.version else None


def test_one_40164_at_the_refresh_point_costs_no_token(
    tmp_path: Path, service_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """A single 40164 answer to the refresh (the sandbox's `ip` fault, count 1) is retried
    within the held token's life, not after WXTOKEN_CONFIG_RETRY_S (300 s): the successor
    is stored before the old token expires and the subscriber never lacks a valid token."""
    stack = make_stack(tmp_path, service_env, expires_in_s=30, overlap_s=10, app_count=1)
    try:
        app_id = stack.app_ids[0]
        producer = stack.producer(**REAL_RETRIES)
        subscriber = stack.subscriber()
        subscriber.wait_ready()
        subscriber.wait_calls(app_id, 3)
        first = stack.snapshot(app_id)
        assert first is not None
        # The next call upstream is the refresh at 6 s left: it gets the 40164.
        stack.sandbox.state.set_fault(Fault(mode="ip", count=1, apps=frozenset({app_id})))
        second = wait_for(
            lambda: newer_snapshot(stack, app_id, first),
            timeout_s=60,
            message="the successor after one 40164",
        )
        subscriber.wait_calls(app_id, 3, after_version=first.version, timeout_s=30)
        [(refused_at, refused_line)] = log_times(producer, "40164")
        with capsys.disabled():
            print(
                f"\n[40164 at refresh] token v1 issued t=0.0 s, expires "
                f"t={first.expires_at - first.issued_at:.1f} s; "
                f"40164 answered t={refused_at - first.issued_at:.1f} s "
                f"({first.expires_at - refused_at:.1f} s left); successor issued "
                f"t={second.issued_at - first.issued_at:.1f} s, "
                f"{first.expires_at - second.issued_at:.1f} s before the old one expired\n"
                f"  {refused_line.split(': ', 1)[1]}"
            )
        assert "within the" in refused_line
        assert second.issued_at < first.expires_at
        assert subscriber.events("unavailable") == []
        assert subscriber.bad_calls() == []
        # Every call until the successor arrived used a token valid at that moment.
        for call in subscriber.calls(app_id):
            if call["version"] == first.version:
                assert call["t"] < first.expires_at
        assert producer.terminate() == 0
    finally:
        stack.close()


def test_after_an_expiry_the_token_is_back_soon_after_upstream(
    tmp_path: Path, service_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Upstream busy (-1) from before the refresh until well past the expiry: once nothing
    valid is held the producer retries at most every 3 s (not its grown transient backoff),
    so the first attempt after upstream is back fetches the token."""
    stack = make_stack(tmp_path, service_env, expires_in_s=20, overlap_s=10, app_count=1)
    try:
        app_id = stack.app_ids[0]
        producer = stack.producer(**REAL_RETRIES)
        wait_line(
            producer,
            lambda line: f"fetched {app_id}" in line,
            timeout_s=30,
            message="the first token",
        )
        first = stack.snapshot(app_id)
        assert first is not None
        stack.sandbox.state.set_fault(Fault(mode="busy", apps=frozenset({app_id})))
        # Failing for long enough past the expiry that the transient backoff has grown.
        wait_for(
            lambda: time.time() > first.expires_at + 20,
            timeout_s=60,
            message="twenty seconds past the expiry",
        )
        stack.sandbox.state.set_fault(None)
        back_at = time.time()
        second = wait_for(
            lambda: newer_snapshot(stack, app_id, first),
            timeout_s=30,
            message="the token after upstream is back",
        )
        failures = log_times(producer, "token fetch failed")
        expired = [(t, line) for t, line in failures if "no valid token held" in line]
        [(fetched_at, _)] = [
            (t, line) for t, line in log_times(producer, f"fetched {app_id}") if t >= back_at - 1
        ]
        last_failed_at = max(t for t, _ in failures)
        delays = [float(re.search(r"retrying in ([\d.]+) s", line)[1]) for _, line in expired]  # type: ignore[index]
        with capsys.disabled():
            print(
                f"\n[past expiry] token expired t=0.0 s; upstream back t="
                f"{back_at - first.expires_at:.1f} s; last failed attempt t="
                f"{last_failed_at - first.expires_at:.1f} s; token fetched t="
                f"{fetched_at - first.expires_at:.1f} s, stored (issued) t="
                f"{second.issued_at - first.expires_at:.1f} s; {len(failures)} failed "
                f"attempts, {len(expired)} with nothing valid held, their delays "
                f"{min(delays):.1f}..{max(delays):.1f} s"
            )
        assert expired, "no retry with nothing valid held"
        # The plan, not the clock: every retry with nothing held was at most 3 s away.
        assert max(delays) <= 3.0
        assert producer.terminate() == 0
    finally:
        stack.close()
