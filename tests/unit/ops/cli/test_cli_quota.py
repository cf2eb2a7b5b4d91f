"""Unit tests of `wxtoken quota clear`: CliRunner, fakeredis, and a fake broker that hands
each request to a real `ControlHandler` (the leader) whose upstream is `responses`."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import fakeredis
import pytest
import responses
from click.testing import CliRunner, Result
from pydantic import SecretStr

from consumer_lib.amqp import Delivery
from consumer_lib.errors import BrokerError
from consumer_lib.settings import CommonSettings
from consumer_lib.wire.control import (
    CONTROL_MESSAGE_TYPE,
    ControlAnswer,
    ControlRequest,
    ControlResult,
)
from consumer_lib.wire.keys import KeyLayout
from consumer_lib.wire.signing import generate_keypair, key_id, load_private_key
from ops.broker import SendControl
from ops.cli import main
from ops.cli.context import OpsContext
from producer.app_config import AppConfig
from producer.messaging.control import ControlHandler
from producer.store.audit import AuditLog
from producer.upstream.wechat import WeChatClient
from tests.conftest import FakeClock

BASE = "https://wechat.test"
CLEAR_URL = f"{BASE}/cgi-bin/clear_quota/v2"
APP = "wxquota00000001"
PREFIX = "wxunit"
KEYS = KeyLayout(PREFIX)


@pytest.fixture
def key_files(tmp_path: Path) -> tuple[Path, Path]:
    return generate_keypair(tmp_path / "operator.key")


@pytest.fixture
def settings(key_files: tuple[Path, Path]) -> CommonSettings:
    return CommonSettings(
        signing_key_file=key_files[0],
        verify_keys=str(key_files[1]),
        redis_url="redis://127.0.0.1:6379/0",
        amqp_url="amqp://guest:guest@127.0.0.1:5672/%2F",
        exchange="wxunit.tokens",
        key_prefix=PREFIX,
    )


@pytest.fixture
def now(clock: FakeClock) -> FakeClock:
    """The fake clock at the real time: fakeredis expires keys by the real clock."""
    clock.now_s = float(int(time.time()))
    return clock


@pytest.fixture
def fake_redis() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


class FakeBroker:
    """Delivers what the CLI sends to the leader's handler, or drops it."""

    def __init__(self, handler: ControlHandler | None) -> None:
        self.handler = handler
        self.sent: list[bytes] = []
        self.fail_open = False

    @contextmanager
    def __call__(self, settings: CommonSettings, sender: str) -> Iterator[SendControl]:
        if self.fail_open:
            raise BrokerError("cannot reach RabbitMQ at 127.0.0.1:5672: AMQPConnectionError")

        def send(body: bytes, now_s: float) -> None:
            self.sent.append(body)
            if self.handler is not None:
                self.handler.handle(
                    Delivery(body, user_id=None, app_id=sender, type=CONTROL_MESSAGE_TYPE)
                )

        yield send


def leader(
    client: fakeredis.FakeRedis, clock: FakeClock, key_files: tuple[Path, Path]
) -> ControlHandler:
    return ControlHandler(
        client,
        KEYS,
        apps=[AppConfig(app_id=APP, secret=SecretStr("quota-secret-0123"))],
        upstream=WeChatClient(BASE),
        verify_keys=[load_private_key(key_files[0]).public_key()],
        is_leader=lambda: True,
        producer_id="producer-a",
        audit=AuditLog(client, KEYS, clock=clock),
        clock=clock,
        run=lambda work: work(),
    )


def run(
    settings: CommonSettings,
    client: fakeredis.FakeRedis,
    clock: FakeClock,
    broker: FakeBroker,
    *args: str,
    answer: str | None = None,
) -> Result:
    obj = OpsContext(
        settings=settings,
        redis_client=client,
        controller=broker,
        clock=clock,
        sleep=clock.advance,  # waiting advances the fake clock: a timeout takes no time
        operator="ops:alice@host",
    )
    return CliRunner().invoke(main, ["quota", "clear", *args], obj=obj, input=answer)


@responses.activate
def test_yes_clears_and_prints_cleared(
    settings: CommonSettings,
    fake_redis: fakeredis.FakeRedis,
    now: FakeClock,
    key_files: tuple[Path, Path],
) -> None:
    """--yes sends one signed request; the leader's `done` is printed, exit 0."""
    responses.post(CLEAR_URL, json={"errcode": 0, "errmsg": "ok"})
    broker = FakeBroker(leader(fake_redis, now, key_files))
    result = run(settings, fake_redis, now, broker, APP, "--yes")
    assert result.exit_code == 0, result.output
    assert "cleared" in result.stdout
    assert len(responses.calls) == 1
    public_key = load_private_key(key_files[0]).public_key()
    request, signer = ControlRequest.open(broker.sent[0], {key_id(public_key): public_key})
    assert (request.app_id, request.operator) == (APP, "ops:alice@host")
    assert signer == key_id(public_key)


@responses.activate
def test_confirmation_says_what_it_spends_and_yes_goes_ahead(
    settings: CommonSettings,
    fake_redis: fakeredis.FakeRedis,
    now: FakeClock,
    key_files: tuple[Path, Path],
) -> None:
    """Without --yes the operator is told it spends one of 10 a month, and `y` proceeds."""
    responses.post(CLEAR_URL, json={"errcode": 0, "errmsg": "ok"})
    broker = FakeBroker(leader(fake_redis, now, key_files))
    result = run(settings, fake_redis, now, broker, APP, answer="y\n")
    assert result.exit_code == 0, result.output
    assert "one of the app's 10 clear_quota calls a month" in result.stderr
    assert "cleared" in result.stdout


@responses.activate
def test_answering_no_sends_nothing(
    settings: CommonSettings,
    fake_redis: fakeredis.FakeRedis,
    now: FakeClock,
    key_files: tuple[Path, Path],
) -> None:
    """`n` at the confirmation (or no answer at all) aborts before anything is sent."""
    broker = FakeBroker(leader(fake_redis, now, key_files))
    for answer in ("n\n", ""):
        result = run(settings, fake_redis, now, broker, APP, answer=answer)
        assert result.exit_code == 1
        assert "Aborted" in result.output
    assert broker.sent == []
    assert len(responses.calls) == 0


@responses.activate
def test_48006_is_printed_with_its_meaning_and_exits_1(
    settings: CommonSettings,
    fake_redis: fakeredis.FakeRedis,
    now: FakeClock,
    key_files: tuple[Path, Path],
) -> None:
    """WeChat's "used up this month" is what the operator reads, with a failing exit."""
    responses.post(CLEAR_URL, json={"errcode": 48006, "errmsg": "forbid to clear quota"})
    broker = FakeBroker(leader(fake_redis, now, key_files))
    result = run(settings, fake_redis, now, broker, APP, "--yes")
    assert result.exit_code == 1
    assert "48006" in result.stderr
    assert "used up for this month" in result.stderr


@responses.activate
def test_an_app_the_leader_does_not_serve_is_refused_by_name(
    settings: CommonSettings,
    fake_redis: fakeredis.FakeRedis,
    now: FakeClock,
    key_files: tuple[Path, Path],
) -> None:
    """The refusal's reason is printed; nothing goes upstream."""
    broker = FakeBroker(leader(fake_redis, now, key_files))
    result = run(settings, fake_redis, now, broker, "wxnotours000001", "--yes")
    assert result.exit_code == 1
    assert "refused" in result.stderr
    assert "apps file" in result.stderr
    assert len(responses.calls) == 0


@pytest.mark.parametrize("app_id", ["wx app", "a" * 65, "wx/../x", ""])
def test_a_malformed_app_id_is_a_usage_error(
    app_id: str, settings: CommonSettings, fake_redis: fakeredis.FakeRedis, now: FakeClock
) -> None:
    """Exit 2 before anything is asked or sent."""
    broker = FakeBroker(None)
    result = run(settings, fake_redis, now, broker, app_id, "--yes")
    assert result.exit_code == 2
    assert broker.sent == []


def test_no_signing_key_is_a_configuration_error(
    settings: CommonSettings, fake_redis: fakeredis.FakeRedis, now: FakeClock
) -> None:
    """Unsigned requests are never sent, even in insecure mode: exit 2 naming the setting."""
    unsigned = settings.model_copy(
        update={"signing_key_file": None, "insecure_accept_unsigned": True}
    )
    broker = FakeBroker(None)
    result = run(unsigned, fake_redis, now, broker, APP, "--yes")
    assert result.exit_code == 2
    assert "WXTOKEN_SIGNING_KEY_FILE" in result.stderr
    assert broker.sent == []


def test_no_leader_times_out_saying_so(
    settings: CommonSettings, fake_redis: fakeredis.FakeRedis, now: FakeClock
) -> None:
    """Nobody answers and no lease is held: exit 1 naming the empty leader key."""
    broker = FakeBroker(None)
    result = run(settings, fake_redis, now, broker, APP, "--yes", "--timeout", "5")
    assert result.exit_code == 1
    assert "no answer in 5 s" in result.stderr
    assert f"no producer leads ({PREFIX}:leader is empty)" in result.stderr
    assert len(broker.sent) == 1


def test_a_leader_that_does_not_trust_the_key_times_out_naming_the_key(
    settings: CommonSettings,
    fake_redis: fakeredis.FakeRedis,
    now: FakeClock,
    key_files: tuple[Path, Path],
    tmp_path: Path,
) -> None:
    """The leader drops a request signed by a key it does not know; the CLI's timeout
    names the leader and the key id to add to its WXTOKEN_CONTROL_KEYS."""
    other_key, _ = generate_keypair(tmp_path / "other.key")
    fake_redis.set(KEYS.leader, "7|producer-a#1234abcd")
    handler = leader(fake_redis, now, (other_key, Path()))
    broker = FakeBroker(handler)
    result = run(settings, fake_redis, now, broker, APP, "--yes", "--timeout", "3")
    assert result.exit_code == 1
    assert "producer-a#1234abcd" in result.stderr
    assert "WXTOKEN_CONTROL_KEYS" in result.stderr
    assert handler.stats.rejected == 1


@pytest.mark.parametrize(
    "stored",
    [b"garbage", b'{"request_id": 1}', b"\xff" * 10, b"OTHER-APP"],
    ids=["text", "wrong-shape", "binary", "another-app"],
)
def test_a_malformed_answer_in_redis_is_an_error(
    stored: bytes, settings: CommonSettings, fake_redis: fakeredis.FakeRedis, now: FakeClock
) -> None:
    """Whatever sits at the answer key, the CLI never prints `cleared` for it."""

    class Forger(FakeBroker):
        @contextmanager
        def __call__(self, settings: CommonSettings, sender: str) -> Iterator[SendControl]:
            def send(body: bytes, now_s: float) -> None:
                request = ControlRequest.model_validate_json(json.loads(body)["payload"])
                value = stored
                if stored == b"OTHER-APP":  # well formed, but about another app
                    value = ControlAnswer(
                        request_id=request.request_id,
                        action=request.action,
                        app_id="wxother00000001",
                        result=ControlResult.DONE,
                        message="quota cleared",
                        producer_id="producer-a",
                        answered_at=now_s,
                    ).encode()
                fake_redis.set(KEYS.control_answer(request.request_id), value)

            yield send

    result = run(settings, fake_redis, now, Forger(None), APP, "--yes")
    assert result.exit_code == 1
    assert "Redis holds" in result.stderr
    assert "cleared" not in result.stdout


def test_an_unreachable_broker_is_one_line_and_exit_1(
    settings: CommonSettings, fake_redis: fakeredis.FakeRedis, now: FakeClock
) -> None:
    """A broker failure is reported, not a traceback."""
    broker = FakeBroker(None)
    broker.fail_open = True
    result = run(settings, fake_redis, now, broker, APP, "--yes")
    assert result.exit_code == 1
    assert "cannot reach RabbitMQ" in result.stderr
