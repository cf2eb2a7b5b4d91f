"""The caller IP of an IP-not-whitelisted answer, from the refresher's failed fetch to the
log line, Redis (producer/store/upstream_failures.py) and `wxtoken status`."""

from __future__ import annotations

import json
import logging
import time

import fakeredis
import pytest
from click.testing import CliRunner, Result
from pydantic import SecretStr

from consumer_lib.settings import CommonSettings
from consumer_lib.wire.keys import KeyLayout
from consumer_lib.wire.kinds import Platform
from consumer_lib.wire.update import TokenKind
from ops.cli import main
from ops.cli.context import OpsContext
from producer.app_config import AppConfig
from producer.store.tokens import TokenStore
from producer.store.upstream_failures import UpstreamErrors
from producer.upstream.errors import UpstreamError, judge
from tests.conftest import FakeClock
from tests.unit._helpers import make_update, unreachable_redis
from tests.unit.producer.builders import build_refresher

PREFIX = "wxunit"
KEYS = KeyLayout(PREFIX)
APP = "wxipapp00000001"
SETTINGS = CommonSettings(
    insecure_accept_unsigned=True,
    redis_url="redis://127.0.0.1:6379/0",
    amqp_url="amqp://guest:guest@127.0.0.1:5672/%2F",
    exchange="wxunit.tokens",
    key_prefix=PREFIX,
)


def ip_error(errcode: int = 40164, platform: Platform = Platform.WECHAT) -> UpstreamError:
    """What WeChat's (or WeCom's) IP refusal turns into."""
    body = json.dumps(
        {
            "errcode": errcode,
            "errmsg": "invalid ip 203.0.113.7 ipv6 ::ffff:203.0.113.7, not in whitelist rid: 1",
        }
    ).encode()
    with pytest.raises(UpstreamError) as caught:
        judge(200, body, platform=platform, uses_token=False)
    return caught.value


@pytest.fixture
def now(clock: FakeClock) -> FakeClock:
    clock.now_s = float(int(time.time()))
    return clock


@pytest.fixture
def fake_redis() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


def status(client: fakeredis.FakeRedis, clock: FakeClock, *args: str) -> Result:
    obj = OpsContext(settings=SETTINGS, redis_client=client, clock=clock)
    return CliRunner().invoke(main, ["status", *args], obj=obj)


class FailingFetcher:
    def __init__(self, exc: UpstreamError) -> None:
        self.exc = exc

    def fetch(self, app: AppConfig, *, force_refresh: bool = False) -> object:
        raise self.exc


def test_a_refused_fetch_names_the_ip_in_the_log_and_in_redis(
    fake_redis: fakeredis.FakeRedis, now: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """The refresher's one call records the failure; its ERROR line names the IP too."""
    errors = UpstreamErrors(fake_redis, KEYS, clock=now)
    refresher = build_refresher(
        AppConfig(app_id=APP, secret=SecretStr("s3cret-value-0123")),
        fetcher=FailingFetcher(ip_error()),  # type: ignore[arg-type]
        store=TokenStore(fake_redis, KEYS),
        clock=now,
        on_fetch_failed=errors.record,
    )
    with caplog.at_level(logging.ERROR, logger="producer.refresh.refresher"):
        refresher.step()
    assert any("203.0.113.7" in r.getMessage() for r in caplog.records)
    failure = errors.read_all()[(APP, TokenKind.ACCESS_TOKEN)]
    assert failure.caller_ip == "203.0.113.7"
    assert failure.errcode == 40164


@pytest.mark.parametrize(
    ("errcode", "platform"),
    [(40164, Platform.WECHAT), (61004, Platform.WECHAT), (60020, Platform.WECOM)],
)
def test_status_shows_the_ip_to_whitelist_for_an_app_never_fetched(
    errcode: int, platform: Platform, fake_redis: fakeredis.FakeRedis, now: FakeClock
) -> None:
    """An app whose first fetch was refused has no token, yet status lists it with the IP."""
    UpstreamErrors(fake_redis, KEYS, clock=now).record(
        APP, TokenKind.ACCESS_TOKEN, ip_error(errcode, platform)
    )
    result = status(fake_redis, now)
    assert result.exit_code == 3, result.output  # a missing credential (and no leader)
    [row] = [line for line in result.stdout.splitlines() if line.startswith(APP)]
    assert "missing" in row
    assert "IP 203.0.113.7 not whitelisted" in row
    [record] = json.loads(status(fake_redis, now, "--json").stdout)
    assert record["upstream_error"]["caller_ip"] == "203.0.113.7"
    assert record["upstream_error"]["errcode"] == errcode


def test_status_notes_a_failure_newer_than_the_token_and_forgets_an_older_one(
    fake_redis: fakeredis.FakeRedis, now: FakeClock
) -> None:
    """A valid token with a later refusal shows the IP; a later good fetch hides it."""
    errors = UpstreamErrors(fake_redis, KEYS, clock=now)
    TokenStore(fake_redis, KEYS).write(make_update(app_id=APP, version=3, issued_at=now() - 60))
    errors.record(APP, TokenKind.ACCESS_TOKEN, ip_error())
    assert "IP 203.0.113.7 not whitelisted" in status(fake_redis, now).stdout
    now.advance(30)
    TokenStore(fake_redis, KEYS).write(make_update(app_id=APP, version=4, issued_at=now()))
    result = status(fake_redis, now)
    assert "not whitelisted" not in result.stdout
    assert json.loads(status(fake_redis, now, "--json").stdout)[0]["upstream_error"] is None


@pytest.mark.parametrize(
    ("field", "value"),
    [
        (f"{APP}:access_token", b"not json"),
        (
            f"{APP}:access_token",
            json.dumps(
                {"at_s": 1, "failure_kind": "config", "message": "x", "caller_ip": "not-an-ip"}
            ),
        ),
        (f"{APP}:no_such_kind", json.dumps({"at_s": 1, "failure_kind": "config", "message": "x"})),
        (
            "bad app id!:access_token",
            json.dumps({"at_s": 1, "failure_kind": "config", "message": "x"}),
        ),
        (f"{APP}:access_token", b"\xff\xfe"),
    ],
    ids=["not-json", "bad-ip", "bad-kind", "bad-app", "binary"],
)
def test_garbage_in_the_hash_is_skipped(
    field: str, value: bytes | str, fake_redis: fakeredis.FakeRedis, now: FakeClock
) -> None:
    """Redis is outside input: a malformed failure never reaches the status output."""
    fake_redis.hset(KEYS.upstream_errors, field, value)
    assert UpstreamErrors(fake_redis, KEYS).read_all() == {}
    fake_redis.set(KEYS.leader, "1|producer-a#1")  # a leader: status' exit is 0
    result = status(fake_redis, now)
    assert result.exit_code == 0
    assert "not whitelisted" not in result.output


def test_recording_while_redis_is_down_never_raises(caplog: pytest.LogCaptureFixture) -> None:
    """An outage is one warning, and the refresher carries on."""
    errors = UpstreamErrors(unreachable_redis(), KEYS)
    with caplog.at_level(logging.WARNING, logger="producer.store.upstream_failures"):
        errors.record(APP, TokenKind.ACCESS_TOKEN, ip_error())
        errors.record(APP, TokenKind.ACCESS_TOKEN, ip_error())
    assert len(caplog.records) == 1
