"""`--kind` on status, get, set, history and watch: every credential kind, by value or name."""

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
from consumer_lib.wire.update import TokenKind, TokenUpdate
from ops import _format
from ops.cli import main
from ops.cli.context import OpsContext, Publish, SendRequest
from producer.store.tokens import TokenStore
from tests.conftest import FakeClock
from tests.unit._helpers import make_update

PREFIX = "wxunitkinds"
APP = "wxapp0000000001"
KEYS = KeyLayout(PREFIX)
SETTINGS = CommonSettings(
    redis_url="redis://127.0.0.1:6379/0",
    amqp_url="amqp://guest:guest@127.0.0.1:5672/%2F",
    exchange="wxunit.tokens",
    key_prefix=PREFIX,
    insecure_accept_unsigned=True,
)
TOKEN = "ACCESS_token_0123456789abcdefghijkl"
TICKET = "JSAPI_ticket_0123456789abcdefghijkl"
NEW_TICKET = "CARD_ticket_9876543210zyxwvutsrqpo"


class FakeBroker:
    def __init__(self) -> None:
        self.published: list[TokenUpdate] = []

    @contextmanager
    def publisher(self, settings: CommonSettings, sender: str) -> Iterator[Publish]:
        yield lambda update, now_s: self.published.append(update)

    @contextmanager
    def requester(self, settings: CommonSettings, sender: str) -> Iterator[SendRequest]:
        yield lambda request, now_s: None


@pytest.fixture
def now(clock: FakeClock) -> FakeClock:
    clock.now_s = float(int(time.time()))
    return clock


@pytest.fixture
def fake_redis(now: FakeClock) -> fakeredis.FakeRedis:
    """fakeredis holding APP's access token and its jsapi ticket."""
    client = fakeredis.FakeRedis()
    store = TokenStore(client, KEYS)
    for kind, value, version in (
        (TokenKind.ACCESS_TOKEN, TOKEN, 5),
        (TokenKind.JSAPI_TICKET, TICKET, 2),
    ):
        update = make_update(
            app_id=APP, kind=kind, value=value, version=version, issued_at=now.now_s - 60
        )
        assert store.write(update).written
    return client


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
        operator="ops:tester@host",
    )
    return CliRunner().invoke(main, args, input=stdin, obj=context)


@pytest.mark.parametrize("kind", ["jsapi", "jsapi_ticket"])
def test_get_a_ticket_by_name_or_value(
    fake_redis: fakeredis.FakeRedis, now: FakeClock, kind: str
) -> None:
    """`get --kind jsapi` shows the ticket, masked, not the access token."""
    result = run(["get", APP, "--kind", kind, "--json"], redis_client=fake_redis, clock=now)
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert (shown["kind"], shown["version"]) == ("jsapi_ticket", 2)
    assert TICKET not in result.output


def test_status_lists_every_kind_and_filters_one(
    fake_redis: fakeredis.FakeRedis, now: FakeClock
) -> None:
    """`status` shows each (app, kind); `--kind` keeps one kind."""
    every = json.loads(run(["status", "--json"], redis_client=fake_redis, clock=now).stdout)
    assert sorted(r["kind"] for r in every) == ["access_token", "jsapi_ticket"]
    result = run(["status", "--json", "--kind", "jsapi"], redis_client=fake_redis, clock=now)
    assert [r["kind"] for r in json.loads(result.stdout)] == ["jsapi_ticket"]
    empty = run(["status", "--kind", "agent_config"], redis_client=fake_redis, clock=now)
    assert empty.exit_code == 3  # no producer holds the lease
    fake_redis.set(KEYS.leader, "1|producer-a#1")
    empty = run(["status", "--kind", "agent_config"], redis_client=fake_redis, clock=now)
    assert empty.exit_code == 0
    assert "no apps known" in empty.stderr


def test_set_a_new_ticket_kind_then_history_filters_it(
    fake_redis: fakeredis.FakeRedis, now: FakeClock
) -> None:
    """`set --kind wx_card` stores and publishes that kind; `history --kind` shows only it."""
    broker = FakeBroker()
    result = run(
        ["set", APP, "--kind", "wx_card", "--expires-in", "600", "--allow-new-app"],
        redis_client=fake_redis,
        clock=now,
        broker=broker,
        stdin=NEW_TICKET + "\n",
    )
    assert result.exit_code == 0, result.output
    assert "wx_card_ticket" in result.stdout
    assert [(u.kind, u.value) for u in broker.published] == [(TokenKind.WX_CARD_TICKET, NEW_TICKET)]
    stored = TokenStore(fake_redis, KEYS).read(APP, TokenKind.WX_CARD_TICKET)
    assert stored is not None
    assert stored.value == NEW_TICKET
    history = json.loads(
        run(["history", "--json", "--kind", "wx_card"], redis_client=fake_redis, clock=now).stdout
    )
    assert [entry["kind"] for entry in history] == ["wx_card_ticket"]
    none = json.loads(
        run(["history", "--json", "--kind", "jsapi"], redis_client=fake_redis, clock=now).stdout
        or "[]"
    )
    assert none == []


@pytest.mark.parametrize(
    "command", [["status"], ["get", APP], ["history"], ["watch"], ["set", APP]]
)
def test_unknown_kind_is_a_usage_error(
    fake_redis: fakeredis.FakeRedis, now: FakeClock, command: list[str]
) -> None:
    """Every command refuses an unknown --kind with exit 2, naming the choices."""
    result = run([*command, "--kind", "jsapi2"], redis_client=fake_redis, clock=now)
    assert result.exit_code == 2
    assert "unknown credential kind" in result.stderr
    assert "agent_config_ticket" in result.stderr


def test_message_kind_names_the_kind_or_none() -> None:
    """What watch --kind filters on: a valid update's kind, None for garbage (always shown)."""
    ticket = make_update(kind=TokenKind.JSAPI_TICKET, value=TICKET, version=2)
    assert _format.message_kind(ticket.encode()) is TokenKind.JSAPI_TICKET
    assert _format.message_kind(b"{garbage") is None
