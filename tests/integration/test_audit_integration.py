"""The audit trail on the real local Redis: the `wxtoken` console script writes and reads it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pika
import pytest
import redis

from consumer_lib.wire.keys import KeyLayout
from consumer_lib.wire.refresh_request import requests_exchange
from consumer_lib.wire.update import mask
from producer.store.audit import AuditEvent, AuditLog, audit_key

APP = "wxaudit00000001"
TOKEN = "AUDIT_override_token_0123456789abcdefghijklmnopqrstuvwxyz"
SCRIPT = Path(sys.executable).with_name("wxtoken")
COMMAND = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "ops.cli"]


@pytest.fixture
def env(service_env: dict[str, str], amqp_url: str) -> Iterator[dict[str, str]]:
    """The isolated settings; the requests exchange `wxtoken refresh` declares is deleted after."""
    yield {**os.environ, **service_env}
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        connection.channel().exchange_delete(requests_exchange(service_env["WXTOKEN_EXCHANGE"]))
    finally:
        connection.close()


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    made = redis.Redis.from_url(redis_url)
    yield made
    made.close()


def wxtoken(
    *args: str, env: dict[str, str], stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*COMMAND, *args],
        input=stdin,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_set_and_refresh_then_history_json_shows_them(
    env: dict[str, str], client: redis.Redis, isolation: dict[str, str]
) -> None:
    """`wxtoken set` as a process is listed by `wxtoken history --json`; `wxtoken refresh`
    with no producer to answer exits 1 and records nothing (the leader audits verdicts)."""
    done = wxtoken(
        *("set", APP, "--expires-in", "600", "--allow-new-app", "--reason", "WeChat outage"),
        env=env,
        stdin=TOKEN + "\n",
    )
    assert done.returncode == 0, done.stderr
    version = int(done.stdout.strip().rsplit(" ", 1)[-1])
    # No producer runs: the leader audits a refresh with its verdict, so none is recorded.
    done = wxtoken("refresh", APP, "--reason", "40001 seen", "--timeout", "1", env=env)
    assert done.returncode == 1, done.stderr
    assert "no producer leads" in done.stderr

    done = wxtoken("history", APP, "--json", env=env)
    assert done.returncode == 0, done.stderr
    records = json.loads(done.stdout)
    assert [(r["event"], r["version"], r["reason"]) for r in records] == [
        ("override", version, "WeChat outage"),
    ]
    for record in records:
        assert record["app_id"] == APP
        assert record["kind"] == "access_token"
        assert record["who"].startswith("ops:")
        assert record["masked_token"] == mask(TOKEN)
    assert TOKEN not in done.stdout + done.stderr

    table = wxtoken("history", env=env)
    assert table.returncode == 0, table.stderr
    assert len(table.stdout.strip().splitlines()) == 2
    assert TOKEN not in table.stdout
    stream = client.xrange(KeyLayout(isolation["key_prefix"]).audit)
    assert len(stream) == 1
    assert all(TOKEN.encode() not in b"".join(fields.values()) for _, fields in stream)


def test_the_stream_stays_capped_on_real_redis(
    client: redis.Redis, isolation: dict[str, str]
) -> None:
    """With `MAXLEN ~` the real stream stays within one node's worth above the cap."""
    keys = KeyLayout(isolation["key_prefix"])
    audit = AuditLog(client, keys, max_entries=20)
    node_entries = int(client.config_get("stream-node-max-entries")["stream-node-max-entries"])
    for n in range(300):
        audit.record(AuditEvent.REFRESH, APP, who="prod-it", version=n + 1)
        assert client.xlen(audit_key(keys)) <= 20 + max(node_entries, 1)
    assert [e.version for e in audit.read(APP, limit=3)] == [300, 299, 298]


def test_history_with_redis_unreachable_exits_1(env: dict[str, str]) -> None:
    """A Redis nobody listens on is one `Error: Redis:` line and exit 1."""
    done = wxtoken("history", env={**env, "WXTOKEN_REDIS_URL": "redis://127.0.0.1:1/0"})
    assert done.returncode == 1
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("Error: Redis: reading the audit trail")
