"""Unit tests of `wxtoken refresh`: fakeredis and a recording requester injected."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import fakeredis
import pytest
from click.testing import CliRunner, Result

from consumer_lib.errors import BrokerError
from consumer_lib.settings import CommonSettings
from consumer_lib.wire.keys import KeyLayout
from consumer_lib.wire.refresh_request import RefreshRequest, fingerprint
from consumer_lib.wire.update import TokenKind, TokenUpdate
from ops.cli import main
from ops.cli.context import OpsContext, SendRequest
from producer.errcodes import FailureKind
from producer.store import TokenStore
from producer.upstream import UpstreamError
from producer.upstream_errors import UpstreamErrors
from tests.conftest import FakeClock
from tests.unit._helpers import make_update, unreachable_redis

PREFIX = "wxunit"
APP = "wxapp0000000001"
TOKEN = "REFRESH_me_token_0123456789abcdefghijklmnop"
KEYS = KeyLayout(PREFIX)
SETTINGS = CommonSettings(
    insecure_accept_unsigned=True,  # signing has tests of its own
    redis_url="redis://127.0.0.1:6379/0",
    amqp_url="amqp://guest:guest@127.0.0.1:5672/%2F",
    exchange="wxunit.tokens",
    key_prefix=PREFIX,
)


class FakeRequester:
    """Stands in for the broker: records each opening and each request sent."""

    def __init__(self, *, fail_open: bool = False) -> None:
        self.fail_open = fail_open
        self.opened: list[tuple[str, str]] = []
        self.sent: list[tuple[RefreshRequest, float]] = []

    @contextmanager
    def __call__(self, settings: CommonSettings, sender: str) -> Iterator[SendRequest]:
        if self.fail_open:
            raise BrokerError("cannot reach RabbitMQ at 127.0.0.1:5672: AMQPConnectionError")
        self.opened.append((settings.exchange, sender))

        def send(request: RefreshRequest, now_s: float) -> None:
            self.sent.append((request, now_s))

        yield send


@pytest.fixture
def now(clock: FakeClock) -> FakeClock:
    """The fake clock at the real time: fakeredis expires keys by the real clock."""
    clock.now_s = float(int(time.time()))
    return clock


@pytest.fixture
def fake_redis() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


@pytest.fixture
def requester() -> FakeRequester:
    return FakeRequester()


def seed(client: fakeredis.FakeRedis, now_s: float, **changes: Any) -> TokenUpdate:
    """Store a token for APP issued ten minutes ago."""
    update = make_update(app_id=APP, value=TOKEN, version=9, issued_at=now_s - 600, **changes)
    assert TokenStore(client, KEYS).write(update).written
    return update


def run(
    args: list[str], *, redis_client: Any, requester: FakeRequester, clock: FakeClock
) -> Result:
    context = OpsContext(
        settings=SETTINGS,
        redis_client=redis_client,
        requester=requester,
        clock=clock,
        operator="ops:tester@host",
    )
    return CliRunner().invoke(main, ["refresh", *args], obj=context)


def test_refresh_sends_the_fingerprint_and_version_of_the_stored_token(
    fake_redis: fakeredis.FakeRedis, requester: FakeRequester, now: FakeClock
) -> None:
    """One request goes out with the stored token's SHA-256 and version, and no token."""
    seed(fake_redis, now.now_s)
    result = run(
        [APP, "--reason", "40001 seen"], redis_client=fake_redis, requester=requester, clock=now
    )
    assert result.exit_code == 0, result.output
    assert result.stdout == f"refresh requested for {APP}/access_token (version 9)\n"
    assert requester.opened == [("wxunit.tokens", "wxtoken-ops/ops:tester@host")]
    [(request, sent_at)] = requester.sent
    assert request.app_id == APP
    assert request.kind is TokenKind.ACCESS_TOKEN
    assert request.token_sha256 == fingerprint(TOKEN)
    assert request.reported_version == 9
    assert request.requester == "ops:tester@host"
    assert request.reason == "40001 seen"
    assert request.requested_at == sent_at == now.now_s
    assert TOKEN not in request.encode().decode()
    assert TOKEN not in result.output


def test_refresh_of_a_jsapi_ticket_names_its_kind(
    fake_redis: fakeredis.FakeRedis, requester: FakeRequester, now: FakeClock
) -> None:
    """`--kind jsapi_ticket` reads and reports the ticket, not the access token."""
    seed(fake_redis, now.now_s, kind=TokenKind.JSAPI_TICKET)
    result = run(
        [APP, "--kind", "jsapi_ticket"], redis_client=fake_redis, requester=requester, clock=now
    )
    assert result.exit_code == 0, result.output
    [(request, _)] = requester.sent
    assert request.kind is TokenKind.JSAPI_TICKET


def test_refresh_without_a_stored_token_exits_1_and_sends_nothing(
    fake_redis: fakeredis.FakeRedis, requester: FakeRequester, now: FakeClock
) -> None:
    """With nothing stored for the app there is nothing to report: one line, exit 1."""
    result = run([APP], redis_client=fake_redis, requester=requester, clock=now)
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        f"Error: no token stored for {APP}/access_token (never written, or expired)"
    ]
    assert requester.opened == []


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        pytest.param(["bad app!"], "APP_ID", id="bad-app-id"),
        pytest.param(["x" * 65], "APP_ID", id="long-app-id"),
        pytest.param([APP, "--kind", "x"], "--kind", id="kind"),
        pytest.param([APP, "--reason", "r" * 257], "--reason", id="reason"),
        pytest.param([], "APP_ID", id="no-app-id"),
    ],
)
def test_refresh_refuses_bad_arguments_with_exit_2(
    fake_redis: fakeredis.FakeRedis,
    requester: FakeRequester,
    now: FakeClock,
    args: list[str],
    complaint: str,
) -> None:
    """Bad arguments are usage errors (exit 2) and send nothing."""
    seed(fake_redis, now.now_s)
    result = run(args, redis_client=fake_redis, requester=requester, clock=now)
    assert result.exit_code == 2, result.output
    assert complaint in result.stderr
    assert requester.sent == []


def test_refresh_with_broker_unreachable_is_one_line_exit_1(
    fake_redis: fakeredis.FakeRedis, now: FakeClock
) -> None:
    """An unreachable broker is one `Error:` line and exit 1."""
    seed(fake_redis, now.now_s)
    result = run([APP], redis_client=fake_redis, requester=FakeRequester(fail_open=True), clock=now)
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        "Error: cannot reach RabbitMQ at 127.0.0.1:5672: AMQPConnectionError"
    ]


def test_refresh_with_a_real_unreachable_broker_is_one_line(
    fake_redis: fakeredis.FakeRedis, now: FakeClock
) -> None:
    """The real requests channel turns pika's failure into one line without the password."""
    seed(fake_redis, now.now_s)
    settings = SETTINGS.model_copy(update={"amqp_url": "amqp://guest:sekrit@127.0.0.1:1/%2F"})
    context = OpsContext(settings=settings, redis_client=fake_redis, clock=now, operator="ops:t")
    result = CliRunner().invoke(main, ["refresh", APP], obj=context)
    assert result.exit_code == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("Error: cannot reach RabbitMQ at 127.0.0.1:1")
    assert "sekrit" not in result.output


def test_refresh_with_redis_unreachable_is_one_line_exit_1(
    requester: FakeRequester, now: FakeClock
) -> None:
    """With Redis down the stored token cannot be read: one `Error: Redis:` line, exit 1."""
    result = run([APP], redis_client=unreachable_redis(), requester=requester, clock=now)
    assert result.exit_code == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("Error: Redis: ")
    assert requester.opened == []


def test_refresh_of_an_invalid_stored_value_exits_1(
    fake_redis: fakeredis.FakeRedis, requester: FakeRequester, now: FakeClock
) -> None:
    """Garbage in Redis is named in one line, and nothing is sent."""
    fake_redis.set(KEYS.token(APP), b"not json")
    result = run([APP], redis_client=fake_redis, requester=requester, clock=now)
    assert result.exit_code == 1
    assert "Redis holds an invalid value" in result.stderr
    assert requester.opened == []


def test_refresh_after_a_failed_fetch_with_nothing_stored_asks_for_a_retry(
    fake_redis: fakeredis.FakeRedis, requester: FakeRequester, now: FakeClock
) -> None:
    """No token stored but a failed fetch recorded: the request goes out (the fingerprint of
    nothing held) and the output names the failure, instead of "no token stored"."""
    failed = UpstreamError(
        "errcode 40164: invalid ip 1.2.3.4", kind=FailureKind.CONFIG, errcode=40164
    )
    UpstreamErrors(fake_redis, KEYS, clock=lambda: now.now_s - 12).record(
        APP, TokenKind.ACCESS_TOKEN, failed
    )
    result = run([APP], redis_client=fake_redis, requester=requester, clock=now)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"retry requested for {APP}/access_token: none stored, ")
    assert "12s ago" in result.stdout
    [(request, _)] = requester.sent
    assert request.token_sha256 == fingerprint("")
    assert request.reported_version is None
