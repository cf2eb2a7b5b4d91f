"""`wxtoken refresh [--force]` end to end: the real CLI, a real leading producer, the
sandbox WeChat, real Redis and RabbitMQ. The CLI waits for the leader's verdict."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from consumer_lib.snapshot import SnapshotReader
from consumer_lib.wire.keys import KeyLayout
from consumer_lib.wire.signing import generate_keypair
from producer.store.audit import AuditLog

from .procs import wait_line
from .stack import Stack, make_stack
from .test_quota_clear import leading_producer, wxtoken
from .test_request_flood import token_calls


@pytest.fixture
def long_stack(tmp_path: Path, service_env: dict[str, str]) -> Iterator[Stack]:
    """Two-hour tokens: no scheduled refresh interferes with the verdicts."""
    built = make_stack(tmp_path, service_env, expires_in_s=7200, overlap_s=300)
    yield built
    built.close()


def _stored_version(stack: Stack, app_id: str) -> int:
    client = redis.Redis.from_url(stack.service_env["WXTOKEN_REDIS_URL"])
    try:
        update = SnapshotReader(client, KeyLayout(stack.service_env["WXTOKEN_KEY_PREFIX"])).read(
            app_id
        )
    finally:
        client.close()
    assert update is not None
    return update.version


def test_refresh_is_refuted_and_force_replaces_audited(long_stack: Stack, tmp_path: Path) -> None:
    """A token upstream accepts: `refresh` prints "refuted", exit 3, no fetch; `--force`
    rotates it (one more fetch upstream), prints the new version, exit 0, audited with the
    operator's name; upstream then refuses the old token."""
    stack = long_stack
    operator_key, operator_public = generate_keypair(tmp_path / "operator.key")
    producer = leading_producer(stack, operator_public)
    app_id = stack.app_ids[0]
    wait_line(
        producer,
        lambda line: app_id in line and "fetched" in line,
        timeout_s=30,
        message="the first token",
    )
    before = _stored_version(stack, app_id)
    fetches = token_calls(stack, app_id)

    refuted = wxtoken(stack, "refresh", app_id, "--reason", "drill", key_file=operator_key)
    print(refuted.stdout, refuted.stderr)
    assert refuted.returncode == 3, refuted.stderr
    assert refuted.stdout.startswith(f"refuted: {app_id}/access_token: upstream accepts")
    assert _stored_version(stack, app_id) == before

    forced = wxtoken(stack, "refresh", app_id, "--force", "--reason", "leak", key_file=operator_key)
    print(forced.stdout, forced.stderr)
    assert forced.returncode == 0, forced.stderr
    after = _stored_version(stack, app_id)
    assert after > before
    assert forced.stdout.startswith(f"replaced: {app_id}/access_token is version {after}")
    assert token_calls(stack, app_id) == fetches + 1

    client = redis.Redis.from_url(stack.service_env["WXTOKEN_REDIS_URL"])
    try:
        entries = AuditLog(client, KeyLayout(stack.service_env["WXTOKEN_KEY_PREFIX"])).read(app_id)
    finally:
        client.close()
    [rotated] = [e for e in entries if e.event == "forced_refresh"]
    assert "forced by ops:" in (rotated.reason or "")
    verdicts = [e.reason or "" for e in entries if e.event == "refresh_request"]
    assert any(r.startswith("refresh refuted") for r in verdicts)
    assert any(r.startswith("force_refresh done") for r in verdicts)
