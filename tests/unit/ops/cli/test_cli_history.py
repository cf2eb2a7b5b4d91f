"""`wxtoken set`/`refresh` record in the audit trail, `wxtoken history` shows it (fakeredis)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import fakeredis
import pytest
from click.testing import CliRunner, Result

from consumer_lib.settings import CommonSettings
from consumer_lib.wire.keys import KeyLayout
from consumer_lib.wire.refresh_request import RefreshRequest
from consumer_lib.wire.update import TokenUpdate, mask
from ops import _format
from ops.cli import main
from ops.cli.context import OpsContext, Publish, SendRequest
from producer.store.audit import AuditEvent, AuditLog, audit_key
from producer.store.tokens import TokenStore
from tests.conftest import FakeClock
from tests.unit._helpers import make_update, unreachable_redis

PREFIX = "wxunit"
APP = "wxapp0000000001"
OTHER_APP = "wxapp0000000002"
OLD_TOKEN = "OLD_token_0123456789abcdefghijklmnop"
NEW_TOKEN = "NEW_token_9876543210zyxwvutsrqponmlk"
OPERATOR = "ops:tester@host"
KEYS = KeyLayout(PREFIX)
SETTINGS = CommonSettings(
    redis_url="redis://127.0.0.1:6379/0",
    amqp_url="amqp://guest:guest@127.0.0.1:5672/%2F",
    exchange="wxunit.tokens",
    key_prefix=PREFIX,
    insecure_accept_unsigned=True,  # signing is tested elsewhere; the audit trail is not signed
)


class FakeBroker:
    """Stands in for both broker channels: records published updates and sent requests."""

    def __init__(self) -> None:
        self.published: list[TokenUpdate] = []
        self.sent: list[RefreshRequest] = []

    @contextmanager
    def publisher(self, settings: CommonSettings, sender: str) -> Iterator[Publish]:
        yield lambda update, now_s: self.published.append(update)

    @contextmanager
    def requester(self, settings: CommonSettings, sender: str) -> Iterator[SendRequest]:
        yield lambda request, now_s: self.sent.append(request)


@pytest.fixture
def now(clock: FakeClock) -> FakeClock:
    """The fake clock at the real time: fakeredis expires keys by the real clock."""
    clock.now_s = float(int(time.time()))
    return clock


@pytest.fixture
def fake_redis() -> fakeredis.FakeRedis:
    """fakeredis holding a token of APP the producer stored ten minutes ago."""
    client = fakeredis.FakeRedis()
    seeded = make_update(
        app_id=APP, value=OLD_TOKEN, version=5, issued_at=time.time() - 600, producer_id="prod-a"
    )
    assert TokenStore(client, KEYS).write(seeded).written
    return client


@pytest.fixture
def broker() -> FakeBroker:
    return FakeBroker()


def run(
    args: list[str],
    *,
    redis_client: Any,
    clock: FakeClock,
    broker: FakeBroker | None = None,
    stdin: str | None = None,
) -> Result:
    broker = broker or FakeBroker()
    context = OpsContext(
        settings=SETTINGS,
        redis_client=redis_client,
        publisher=broker.publisher,
        requester=broker.requester,
        clock=clock,
        operator=OPERATOR,
    )
    return CliRunner().invoke(main, args, input=stdin, obj=context)


def set_override(client: Any, clock: FakeClock, *, reason: str = "producer down") -> int:
    """`wxtoken set APP` with NEW_TOKEN; returns the version it printed."""
    result = run(
        ["set", APP, "--expires-in", "3600", "--reason", reason],
        redis_client=client,
        clock=clock,
        stdin=NEW_TOKEN + "\n",
    )
    assert result.exit_code == 0, result.output
    return int(result.stdout.strip().rsplit(" ", 1)[-1])


def test_set_then_history_shows_the_override(
    fake_redis: fakeredis.FakeRedis, now: FakeClock
) -> None:
    """The override is listed with its time, operator, version, reason and masked token."""
    version = set_override(fake_redis, now)
    result = run(["history"], redis_client=fake_redis, clock=now)
    assert result.exit_code == 0, result.output
    header, row = result.stdout.strip().splitlines()
    assert header.split() == list(_format.HISTORY_COLUMNS)
    assert row.startswith(_format.timestamp(now.now_s) + "  override  " + APP)
    for part in (OPERATOR, str(version), mask(NEW_TOKEN), "producer down", "access_token"):
        assert part in row
    assert NEW_TOKEN not in result.output
    assert OLD_TOKEN not in result.output


def test_history_json_lists_entries_newest_first(
    fake_redis: fakeredis.FakeRedis, now: FakeClock
) -> None:
    """`--json` is a list of objects, newest first, tokens masked."""
    first = set_override(fake_redis, now, reason="first")
    now.advance(5)
    second = set_override(fake_redis, now, reason="second")
    result = run(["history", APP, "--json"], redis_client=fake_redis, clock=now)
    assert result.exit_code == 0, result.output
    records = json.loads(result.stdout)
    assert [(r["event"], r["version"], r["reason"]) for r in records] == [
        ("override", second, "second"),
        ("override", first, "first"),
    ]
    assert records[0] == {
        "id": records[0]["id"],
        "at": _format.timestamp(now.now_s),
        "at_s": now.now_s,
        "event": "override",
        "app_id": APP,
        "kind": "access_token",
        "version": second,
        "who": OPERATOR,
        "masked_token": mask(NEW_TOKEN),
        "reason": "second",
    }
    assert NEW_TOKEN not in result.output


def test_history_filters_by_app_and_limits(fake_redis: fakeredis.FakeRedis, now: FakeClock) -> None:
    """APP_ID keeps one app's entries; --limit keeps the newest N."""
    audit = AuditLog(fake_redis, KEYS, clock=now)
    for version in range(1, 4):
        audit.record(AuditEvent.REFRESH, APP, who="prod-a", version=version, reason="scheduled")
        audit.record(AuditEvent.REFRESH, OTHER_APP, who="prod-a", version=version)
    result = run(["history", APP, "--json", "--limit", "2"], redis_client=fake_redis, clock=now)
    assert result.exit_code == 0, result.output
    assert [(r["app_id"], r["version"]) for r in json.loads(result.stdout)] == [(APP, 3), (APP, 2)]
    result = run(["history", "--limit", "4"], redis_client=fake_redis, clock=now)
    assert result.exit_code == 0, result.output
    assert len(result.stdout.strip().splitlines()) == 1 + 4
    assert OTHER_APP in result.stdout


def test_history_of_nothing_says_so(fake_redis: fakeredis.FakeRedis, now: FakeClock) -> None:
    """With no entries the table is a note on stderr (exit 0), the JSON an empty list."""
    result = run(["history"], redis_client=fake_redis, clock=now)
    assert result.exit_code == 0
    assert result.stdout == ""
    assert "no audit entries" in result.stderr
    result = run(["history", "--json"], redis_client=fake_redis, clock=now)
    assert json.loads(result.stdout) == []


def test_history_never_shows_a_whole_token_or_a_broken_line(
    fake_redis: fakeredis.FakeRedis, now: FakeClock
) -> None:
    """A whole token or a newline written into the stream by hand is masked and flattened."""
    fake_redis.xadd(
        audit_key(KEYS),
        {"at": str(now.now_s), "event": "override", "app_id": APP, "kind": "access_token"}
        | {"who": "someone", "masked_token": NEW_TOKEN, "reason": "two\nlines"},
    )
    for args in (["history"], ["history", "--json"]):
        result = run(args, redis_client=fake_redis, clock=now)
        assert result.exit_code == 0, result.output
        assert NEW_TOKEN not in result.output
        assert mask(NEW_TOKEN) in result.output
    table = run(["history"], redis_client=fake_redis, clock=now).stdout
    assert len(table.strip().splitlines()) == 2
    assert "two lines" in table


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        pytest.param(["bad app!"], "APP_ID", id="bad-app-id"),
        pytest.param(["x" * 65], "APP_ID", id="long-app-id"),
        pytest.param(["--limit", "0"], "--limit", id="limit-0"),
        pytest.param(["--limit", "10001"], "--limit", id="limit-10001"),
        pytest.param(["--limit", "many"], "--limit", id="limit-word"),
    ],
)
def test_history_refuses_bad_arguments_with_exit_2(
    fake_redis: fakeredis.FakeRedis, now: FakeClock, args: list[str], complaint: str
) -> None:
    """Bad arguments are usage errors: exit 2, naming the argument."""
    result = run(["history", *args], redis_client=fake_redis, clock=now)
    assert result.exit_code == 2, result.output
    assert complaint in result.stderr


def test_history_with_redis_unreachable_is_one_line_exit_1(now: FakeClock) -> None:
    """An unreachable Redis is one `Error: Redis:` line and exit 1."""
    result = run(["history"], redis_client=unreachable_redis(), clock=now)
    assert result.exit_code == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("Error: Redis: reading the audit trail")
