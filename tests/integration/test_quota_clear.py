"""Operator keys end to end (`wxtoken quota clear`, and `wxtoken set`'s check of the keys
the leader announces): the real CLI, a real producer process, the real Redis and RabbitMQ,
the sandbox WeChat. The operator signs with a key of their own, which the producer trusts
through WXTOKEN_CONTROL_KEYS (quota clears) and WXTOKEN_VERIFY_KEYS (overrides)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import redis
import requests

from consumer_lib.wire.keys import KeyLayout
from consumer_lib.wire.signing import generate_keypair
from producer.store.audit import AuditLog
from tests.waiting import wait_for

from .procs import REPO_ROOT, Producer, wait_line
from .stack import Stack


def wxtoken(
    stack: Stack, *args: str, key_file: Path, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **stack.service_env, "WXTOKEN_SIGNING_KEY_FILE": str(key_file)}
    return subprocess.run(
        [sys.executable, "-m", "ops.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
        env=env,
        check=False,
    )


def leading_producer(stack: Stack, operator_public_key: Path, **env: str) -> Producer:
    """A producer trusting the operator's key (for overrides and control requests),
    leading and listening for requests."""
    verify_keys = f"{stack.service_env['WXTOKEN_VERIFY_KEYS']},{operator_public_key}"
    producer = stack.producer(
        WXTOKEN_VERIFY_KEYS=verify_keys, WXTOKEN_CONTROL_KEYS=str(operator_public_key), **env
    )
    wait_line(
        producer,
        lambda line: "listening for refresh requests" in line,
        timeout_s=30,
        message="the producer listening for requests",
    )
    client = redis.Redis.from_url(stack.service_env["WXTOKEN_REDIS_URL"])
    try:
        leader_key = KeyLayout(stack.service_env["WXTOKEN_KEY_PREFIX"]).leader
        wait_for(lambda: client.get(leader_key), timeout_s=30, message="a leader")
    finally:
        client.close()
    return producer


def clear_calls(stack: Stack, app_id: str) -> int:
    return stack.sandbox.state.calls("clear_quota", app_id)


def test_quota_clear_is_done_by_the_leader_and_the_eleventh_gets_48006(
    stack: Stack, tmp_path: Path
) -> None:
    """`quota clear --yes` prints "cleared" after exactly one clear_quota call upstream,
    audited under the operator's name; once the month's 10 are spent, 48006 is printed
    with a failing exit."""
    operator_key, operator_public = generate_keypair(tmp_path / "operator.key")
    # No spacing here: the second clear must reach WeChat (test_control_role.py spaces them).
    leading_producer(stack, operator_public, WXTOKEN_CLEAR_QUOTA_MIN_INTERVAL_S="0")
    app_id = stack.app_ids[0]

    result = wxtoken(stack, "quota", "clear", app_id, "--yes", key_file=operator_key)
    print(result.stdout, result.stderr)
    assert result.returncode == 0, result.stderr
    assert "cleared" in result.stdout
    assert clear_calls(stack, app_id) == 1

    client = redis.Redis.from_url(stack.service_env["WXTOKEN_REDIS_URL"])
    try:
        audit = AuditLog(client, KeyLayout(stack.service_env["WXTOKEN_KEY_PREFIX"]))
        [entry] = [e for e in audit.read(app_id) if e.event == "clear_quota"]
        assert entry.who.startswith("ops:")
    finally:
        client.close()

    # Spend the rest of the month's allowance directly, as another tool might.
    for _ in range(9):
        answer = requests.post(
            f"{stack.sandbox.base_url}/cgi-bin/clear_quota/v2",
            json={"appid": app_id, "appsecret": stack.apps[app_id]},
            timeout=5,
        ).json()
        assert answer["errcode"] == 0, answer
    assert clear_calls(stack, app_id) == 10

    result = wxtoken(stack, "quota", "clear", app_id, "--yes", key_file=operator_key)
    print(result.stdout, result.stderr)
    assert result.returncode == 1
    assert "48006" in result.stderr
    assert "used up for this month" in result.stderr
    assert "cleared" not in result.stdout


def test_a_key_the_producer_does_not_trust_spends_nothing(stack: Stack, tmp_path: Path) -> None:
    """Signed by a stranger's key, the request is refused by the producer (one log line)
    and the CLI times out naming the key to trust; the sandbox sees no call."""
    _, trusted_public = generate_keypair(tmp_path / "operator.key")
    stranger_key, _ = generate_keypair(tmp_path / "stranger.key")
    producer = leading_producer(stack, trusted_public)
    app_id = stack.app_ids[0]

    result = wxtoken(
        stack, "quota", "clear", app_id, "--yes", "--timeout", "3", key_file=stranger_key
    )
    print(result.stdout, result.stderr)
    assert result.returncode == 1
    assert "WXTOKEN_CONTROL_KEYS" in result.stderr
    wait_line(
        producer,
        lambda line: "refused a control request" in line and "unknown key" in line,
        timeout_s=10,
        message="the producer's refusal",
    )
    assert clear_calls(stack, app_id) == 0


def test_status_shows_the_caller_ip_a_refused_fetch_named(stack: Stack) -> None:
    """WeChat refusing our IP (40164, from the sandbox's `ip` fault) shows in `wxtoken
    status` as the address to whitelist, for an app that never got a token."""
    app_id = stack.app_ids[0]
    requests.post(
        f"{stack.sandbox.base_url}/sandbox/fault",
        json={"mode": "ip", "apps": [app_id]},
        timeout=5,
    ).raise_for_status()
    producer = stack.producer()
    wait_line(
        producer,
        lambda line: "40164" in line and "whitelist caller IP 127.0.0.1" in line,
        timeout_s=30,
        message="the producer's ERROR line naming the IP",
    )

    def status_row() -> str | None:
        result = wxtoken(
            stack, "status", key_file=Path(stack.service_env["WXTOKEN_SIGNING_KEY_FILE"])
        )
        # 3: the app the leader serves has no token (its only fetch was refused)
        assert result.returncode in (0, 3), result.stderr
        rows = [line for line in result.stdout.splitlines() if line.startswith(app_id)]
        return rows[0] if rows and "not whitelisted" in rows[0] else None

    row = wait_for(status_row, timeout_s=30, interval_s=0.5, message="status naming the IP")
    print(row)
    assert "IP 127.0.0.1 not whitelisted" in row


def test_set_warns_when_the_leader_would_delete_its_override(stack: Stack, tmp_path: Path) -> None:
    """The leader announces the key ids it verifies with; `wxtoken set` signed with a key
    not among them warns (the producer would delete the override as invalid), and one
    signed with a trusted key does not."""
    operator_key, operator_public = generate_keypair(tmp_path / "operator.key")
    stranger_key, _ = generate_keypair(tmp_path / "stranger.key")
    leading_producer(stack, operator_public)
    app_id = stack.app_ids[0]
    client = redis.Redis.from_url(stack.service_env["WXTOKEN_REDIS_URL"])
    try:
        announced_key = KeyLayout(stack.service_env["WXTOKEN_KEY_PREFIX"]).verify_keys
        wait_for(lambda: client.get(announced_key), timeout_s=30, message="announced key ids")
        print("announced:", client.get(announced_key))
    finally:
        client.close()
    wait_for(lambda: stack.snapshot(app_id), timeout_s=30, message="a first token")

    def set_token(key_file: Path) -> subprocess.CompletedProcess[str]:
        result = wxtoken(
            stack,
            "set",
            app_id,
            "--expires-in",
            "600",
            key_file=key_file,
            stdin="an-operator-token-0123456789\n",
        )
        print(result.stdout, result.stderr)
        return result

    trusted = set_token(operator_key)
    assert trusted.returncode == 0, trusted.stderr
    assert "warning" not in trusted.stderr
    stranger = set_token(stranger_key)
    assert "warning: the producers verify with key ids" in stranger.stderr
    assert "WXTOKEN_VERIFY_KEYS" in stranger.stderr
