"""No secret and no whole token in any log line or CLI output, even at DEBUG, through a
full cycle: an upstream error, refreshes, an override, a passive refresh."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import requests

from tests.waiting import wait_for

from .procs import REPO_ROOT, wait_line
from .stack import Stack, make_stack


def wxtoken(stack: Stack, *args: str, stdin: str | None = None) -> str:
    """Run the CLI at -vv (DEBUG); return everything it printed."""
    done = subprocess.run(
        [sys.executable, "-m", "ops.cli", "-vv", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
        env={**os.environ, **stack.service_env},
    )
    # `status` exits 3 when a served credential is not ok: this test is about secrets
    assert done.returncode in ((0, 3) if args[0] == "status" else (0,)), done.stderr
    return done.stdout + done.stderr


def test_debug_logs_and_cli_output_hold_no_secret_and_no_whole_token(
    tmp_path: Path, service_env: dict[str, str]
) -> None:
    """Every token the sandbox issued and every app secret is searched for in the producer's
    and the subscriber's DEBUG logs and in the output of every CLI command."""
    stack = make_stack(
        tmp_path, service_env, token_api="classic", expires_in_s=20, overlap_s=10, app_count=2
    )
    try:
        classic_app, other_app = stack.app_ids
        requests.post(
            f"{stack.sandbox.base_url}/sandbox/fault",
            json={"mode": "busy", "count": 1, "apps": [classic_app]},
            timeout=5,
        )
        # The CLI signs `refresh` with the stack's key: a control key of this producer.
        producer = stack.producer(
            WXTOKEN_LOG_LEVEL="DEBUG",
            WXTOKEN_CONTROL_KEYS=stack.service_env["WXTOKEN_VERIFY_KEYS"],
        )
        subscriber = stack.subscriber()
        subscriber.wait_ready()
        subscriber.wait_calls(classic_app, 3)
        first = stack.snapshot(classic_app)
        assert first is not None
        # A scheduled refresh (classic: the secret travels in the URL).
        wait_for(
            lambda: stack.snapshot(classic_app).version > first.version,
            timeout_s=30,
            message="a scheduled refresh",
        )
        # An override with a token obtained elsewhere, then a passive refresh of it.
        answer = requests.post(
            f"{stack.sandbox.base_url}/cgi-bin/stable_token",
            timeout=5,
            json={
                "grant_type": "client_credential",
                "appid": other_app,
                "secret": stack.apps[other_app],
            },
        ).json()
        cli_output = wxtoken(
            stack,
            "set",
            other_app,
            "--expires-in",
            "20",
            "--reason",
            "drill",
            stdin=answer["access_token"],
        )
        # The producer checks a reported token upstream: make upstream refuse the override.
        overridden = wait_for(
            lambda: (
                (held := stack.snapshot(other_app))
                and held.value == answer["access_token"]
                and held
            ),
            timeout_s=10,
            message="the override stored",
        )
        assert stack.sandbox.state.invalidate(other_app)
        cli_output += wxtoken(stack, "refresh", other_app, "--reason", "drill")
        wait_line(
            producer,
            lambda line: "by ops:" in line and "refreshing it now" in line,
            timeout_s=20,
            message="the leader refreshing the reported token",
        )
        for args in (
            ["get", classic_app],
            ["get", other_app, "--json"],
            ["status"],
            ["status", "--json"],
            ["history"],
            ["history", "--json"],
        ):
            cli_output += wxtoken(stack, *args)
        subscriber.wait_calls(other_app, 3)
        # Calls made with the revoked override (until its successor arrived) fail, as meant.
        assert [c for c in subscriber.bad_calls() if c["version"] != overridden.version] == []

        tokens = set(stack.sandbox.state.issued_tokens()) | {answer["access_token"]}
        assert len(tokens) >= 5  # the fault, refreshes, the override and the forced refresh
        texts = {
            "producer log": producer.stderr_text(),
            "subscriber log": subscriber.stderr_text(),
            "subscriber output": "\n".join(subscriber.lines),
            "CLI output": cli_output,
        }
        assert "DEBUG" in texts["producer log"]
        assert "errcode -1" in texts["producer log"]
        for where, text in texts.items():
            for secret in stack.apps.values():
                assert secret not in text, f"an app secret in the {where}"
            leaked = [t[:6] for t in tokens if t in text]
            assert leaked == [], f"whole tokens in the {where}: {leaked}"
    finally:
        stack.close()
