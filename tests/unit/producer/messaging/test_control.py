"""Unit tests of the leader's side of `wxtoken quota clear`: producer/control.ControlHandler
with fakeredis, a real WeChatClient against `responses`, and a fake clock."""

from __future__ import annotations

import json
import logging
import time

import fakeredis
import pytest
import responses
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import SecretStr

from consumer_lib.amqp import Delivery
from consumer_lib.errors import InvalidUpdate
from consumer_lib.wire.control import (
    CONTROL_MESSAGE_TYPE,
    CONTROL_WINDOW_S,
    ControlAction,
    ControlAnswer,
    ControlRequest,
    ControlResult,
    new_request_id,
)
from consumer_lib.wire.keys import KeyLayout
from consumer_lib.wire.kinds import Platform
from consumer_lib.wire.signing import key_id, seal
from producer.app_config import AppConfig, TokenApi
from producer.messaging.control import ControlHandler
from producer.messaging.request_listener import RequestListener
from producer.store.audit import AuditLog
from producer.upstream.wechat import WeChatClient
from tests.conftest import FakeClock

BASE = "https://wechat.test"
CLEAR_URL = f"{BASE}/cgi-bin/clear_quota/v2"
APP = "wxquota00000001"
SECRET = "quota-secret-0123456789"
KEYS = KeyLayout("wxunit")
OPERATOR = Ed25519PrivateKey.generate()
WECHAT_APP = AppConfig(app_id=APP, secret=SecretStr(SECRET))
WECOM_APP = AppConfig(
    app_id="hr-portal",
    secret=SecretStr("wecom-secret-abc"),
    platform=Platform.WECOM,
    token_api=TokenApi.WECOM,
    corp_id="ww0000000000000001",
    agent_id="1000002",
)
SENDER = "wxtoken-ops/ops:alice@host"


def delivery(body: bytes) -> Delivery:
    """A message typed as a control request, as the request listener hands it on."""
    return Delivery(body, user_id=None, app_id=SENDER, type=CONTROL_MESSAGE_TYPE)


@pytest.fixture
def now(clock: FakeClock) -> FakeClock:
    """The fake clock at the real time: fakeredis expires keys by the real clock."""
    clock.now_s = float(int(time.time()))
    return clock


@pytest.fixture
def fake_redis() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


class Leader:
    """A switchable leadership answer."""

    def __init__(self) -> None:
        self.leading = True

    def __call__(self) -> bool:
        return self.leading


@pytest.fixture
def leader() -> Leader:
    return Leader()


@pytest.fixture
def handler(fake_redis: fakeredis.FakeRedis, now: FakeClock, leader: Leader) -> ControlHandler:
    return ControlHandler(
        fake_redis,
        KEYS,
        apps=[WECHAT_APP, WECOM_APP],
        upstream=WeChatClient(BASE),
        verify_keys=[OPERATOR.public_key()],
        is_leader=leader,
        producer_id="producer-a",
        audit=AuditLog(fake_redis, KEYS, clock=now),
        clock=now,
        run=lambda work: work(),  # synchronously: no thread to wait for
    )


def request(now_s: float, **changes: object) -> ControlRequest:
    fields: dict[str, object] = {
        "action": ControlAction.CLEAR_QUOTA,
        "app_id": APP,
        "request_id": new_request_id(),
        "operator": "ops:alice@host",
        "issued_at": now_s,
        "reason": "quota ran out",
    }
    fields.update(changes)
    return ControlRequest.model_validate(fields)


def answer_of(client: fakeredis.FakeRedis, req: ControlRequest) -> ControlAnswer | None:
    raw = client.get(KEYS.control_answer(req.request_id))
    return None if raw is None else ControlAnswer.decode(raw)


def clear_calls() -> int:
    return sum(1 for call in responses.calls if call.request.url == CLEAR_URL)


@responses.activate
def test_a_signed_request_clears_the_quota_audits_and_answers(
    handler: ControlHandler, fake_redis: fakeredis.FakeRedis, now: FakeClock
) -> None:
    """The leader calls clear_quota once with the app's secret, records who asked and
    answers `done` where the CLI waits."""
    responses.post(CLEAR_URL, json={"errcode": 0, "errmsg": "ok"})
    req = request(now())
    handler.handle(delivery(req.seal(OPERATOR)))
    assert clear_calls() == 1
    sent = json.loads(responses.calls[0].request.body or b"{}")
    assert sent == {"appid": APP, "appsecret": SECRET}
    answer = answer_of(fake_redis, req)
    assert answer is not None
    assert answer.result is ControlResult.DONE
    assert answer.producer_id == "producer-a"
    [entry] = AuditLog(fake_redis, KEYS).read(APP)
    assert (entry.event, entry.who) == ("clear_quota", "ops:alice@host")
    assert entry.reason is not None
    assert "done" in entry.reason
    assert key_id(OPERATOR.public_key()) in entry.reason
    assert handler.stats.done == 1


@responses.activate
def test_48006_is_answered_with_its_errcode_and_meaning(
    handler: ControlHandler, fake_redis: fakeredis.FakeRedis, now: FakeClock
) -> None:
    """WeChat's "used up this month" reaches the CLI as errcode 48006 with its meaning."""
    responses.post(CLEAR_URL, json={"errcode": 48006, "errmsg": "forbid to clear quota"})
    req = request(now())
    handler.handle(delivery(req.seal(OPERATOR)))
    answer = answer_of(fake_redis, req)
    assert answer is not None
    assert answer.result is ControlResult.FAILED
    assert answer.errcode == 48006
    assert "used up for this month" in answer.message
    [entry] = AuditLog(fake_redis, KEYS).read(APP)
    assert entry.reason is not None
    assert "48006" in entry.reason


@pytest.mark.parametrize(
    "body",
    [b"<html>busy</html>", b"[1, 2]", b'{"errcode": "zero"}', b"\xff\xfe", b"x" * 70_000],
    ids=["html", "array", "string-errcode", "binary", "oversize"],
)
@responses.activate
def test_a_garbage_answer_from_upstream_is_a_failure_not_a_clear(
    body: bytes, handler: ControlHandler, fake_redis: fakeredis.FakeRedis, now: FakeClock
) -> None:
    """An answer that is not WeChat's JSON is reported as failed, never as cleared."""
    responses.post(CLEAR_URL, body=body)
    req = request(now())
    handler.handle(delivery(req.seal(OPERATOR)))
    answer = answer_of(fake_redis, req)
    assert answer is not None
    assert answer.result is ControlResult.FAILED
    assert answer.errcode is None
    assert handler.stats.failed == 1


@responses.activate
def test_an_unsigned_request_is_refused_counted_and_logged(
    handler: ControlHandler,
    fake_redis: fakeredis.FakeRedis,
    now: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Plain JSON (what a consumer credential could publish) never reaches upstream."""
    req = request(now())
    with caplog.at_level(logging.WARNING, logger="producer.messaging.control"):
        handler.handle(delivery(req.model_dump_json().encode()))
    assert clear_calls() == 0
    assert answer_of(fake_redis, req) is None
    assert handler.stats.rejected == 1
    [line] = [r.getMessage() for r in caplog.records]
    assert "unsigned" in line
    assert "ops:alice@host" in line


@responses.activate
def test_a_request_signed_by_an_unknown_key_is_refused(
    handler: ControlHandler, fake_redis: fakeredis.FakeRedis, now: FakeClock
) -> None:
    """A valid signature by a key the producer does not trust is no better than none."""
    stranger = Ed25519PrivateKey.generate()
    req = request(now())
    handler.handle(delivery(req.seal(stranger)))
    assert clear_calls() == 0
    assert answer_of(fake_redis, req) is None
    assert handler.stats.rejected == 1


@responses.activate
def test_a_tampered_request_is_refused(
    handler: ControlHandler, fake_redis: fakeredis.FakeRedis, now: FakeClock
) -> None:
    """Changing the app id inside a signed envelope breaks the signature."""
    req = request(now(), app_id="wxother00000001")
    envelope = json.loads(req.seal(OPERATOR))
    envelope["payload"] = envelope["payload"].replace("wxother00000001", APP)
    handler.handle(delivery(json.dumps(envelope).encode()))
    assert clear_calls() == 0
    assert handler.stats.rejected == 1


@responses.activate
def test_a_replayed_request_spends_the_quota_once(
    handler: ControlHandler, fake_redis: fakeredis.FakeRedis, now: FakeClock
) -> None:
    """The same signed bytes sent again within the window are refused by the request id,
    and the first answer stays."""
    responses.post(CLEAR_URL, json={"errcode": 0, "errmsg": "ok"})
    req = request(now())
    sealed = req.seal(OPERATOR)
    handler.handle(delivery(sealed))
    now.advance(5)
    handler.handle(delivery(sealed))
    assert clear_calls() == 1
    assert handler.stats.replayed == 1
    answer = answer_of(fake_redis, req)
    assert answer is not None
    assert answer.result is ControlResult.DONE
    assert len(AuditLog(fake_redis, KEYS).read(APP)) == 1


@pytest.mark.parametrize("offset_s", [-(CONTROL_WINDOW_S + 1), CONTROL_WINDOW_S + 1])
@responses.activate
def test_a_request_outside_the_window_is_refused(
    offset_s: float, handler: ControlHandler, fake_redis: fakeredis.FakeRedis, now: FakeClock
) -> None:
    """Too old (a replay after the id was forgotten) or from the future: no upstream call."""
    req = request(now() + offset_s)
    handler.handle(delivery(req.seal(OPERATOR)))
    assert clear_calls() == 0
    assert handler.stats.expired == 1
    answer = answer_of(fake_redis, req)
    assert answer is not None
    assert answer.result is ControlResult.REFUSED
    assert "time window" in answer.message
    assert "check both clocks" in answer.message


@responses.activate
def test_a_standby_ignores_a_valid_request(
    handler: ControlHandler, fake_redis: fakeredis.FakeRedis, now: FakeClock, leader: Leader
) -> None:
    """Only the leader acts, and a standby does not claim the request id either."""
    leader.leading = False
    req = request(now())
    handler.handle(delivery(req.seal(OPERATOR)))
    assert clear_calls() == 0
    assert handler.stats.ignored == 1
    assert fake_redis.get(KEYS.control_seen(req.request_id)) is None
    assert answer_of(fake_redis, req) is None


@pytest.mark.parametrize(
    ("app_id", "why"),
    [("wxnotours000001", "not in this producer's apps file"), ("hr-portal", "WeCom")],
)
@responses.activate
def test_an_app_we_cannot_clear_is_refused_with_the_reason(
    app_id: str,
    why: str,
    handler: ControlHandler,
    fake_redis: fakeredis.FakeRedis,
    now: FakeClock,
) -> None:
    """An unknown app or a WeCom app gets a `refused` answer naming why, and is audited."""
    req = request(now(), app_id=app_id)
    handler.handle(delivery(req.seal(OPERATOR)))
    assert clear_calls() == 0
    answer = answer_of(fake_redis, req)
    assert answer is not None
    assert answer.result is ControlResult.REFUSED
    assert why in answer.message
    assert AuditLog(fake_redis, KEYS).read(app_id)[0].who == "ops:alice@host"


@pytest.mark.parametrize(
    "changes",
    [
        {"app_id": "wx app/../x"},
        {"app_id": ""},
        {"request_id": "not-hex"},
        {"issued_at": -1.0},
        {"operator": ""},
    ],
    ids=["app-with-space", "empty-app", "bad-request-id", "negative-time", "no-operator"],
)
@responses.activate
def test_a_signed_but_malformed_request_is_refused(
    changes: dict[str, object],
    handler: ControlHandler,
    fake_redis: fakeredis.FakeRedis,
    now: FakeClock,
) -> None:
    """A correctly signed payload with a bad field is still rejected before anything runs."""
    payload = json.loads(request(now()).model_dump_json())
    payload.update(changes)
    handler.handle(delivery(seal(OPERATOR, json.dumps(payload).encode())))
    assert clear_calls() == 0
    assert handler.stats.rejected == 1
    assert not list(fake_redis.scan_iter(match=f"{KEYS.prefix}:control:*"))


@pytest.mark.parametrize(
    "body",
    [b"", b"null", b"{", b'{"payload": 1, "key_id": 2, "sig": 3}', b"\x00" * 5000],
    ids=["empty", "null", "truncated", "bad-envelope", "oversize"],
)
def test_garbage_never_raises(body: bytes, handler: ControlHandler) -> None:
    """Whatever arrives, the handler counts it and returns."""
    handler.handle(delivery(body))
    assert handler.stats.rejected == 1


def test_open_names_unknown_keys_and_unsigned_requests() -> None:
    """The wire module's errors say what is wrong, for the one log line."""
    req = request(1_800_000_000.0)
    with pytest.raises(InvalidUpdate, match="unsigned"):
        ControlRequest.open(req.model_dump_json().encode(), {})
    with pytest.raises(InvalidUpdate, match="unknown key"):
        ControlRequest.open(req.seal(OPERATOR), {})


def test_the_request_listener_hands_control_messages_to_the_hook() -> None:
    """A message typed as a control request goes to `on_control`, not the refresh path;
    without a hook it is a rejected refresh request."""
    got: list[bytes] = []
    listener = RequestListener(
        "amqp://guest:guest@127.0.0.1:1/%2F",
        "wxunit.tokens",
        on_request=lambda r: pytest.fail("not a refresh request"),
        on_control=lambda message: got.append(message.body),
        connection_name="test",
    )
    listener._handle(delivery(b"sealed"))
    assert got == [b"sealed"]
    assert listener.stats.rejected == 0
    bare = RequestListener(
        "amqp://guest:guest@127.0.0.1:1/%2F",
        "wxunit.tokens",
        on_request=lambda r: pytest.fail("not a refresh request"),
        connection_name="test",
    )
    bare._handle(delivery(b"sealed"))
    assert bare.stats.rejected == 1


def test_the_new_key_names_are_stable() -> None:
    """CLI and producers of different releases meet at these names."""
    layout = KeyLayout("wxtoken")
    assert layout.control_seen("ab" * 16) == f"wxtoken:control:seen:{'ab' * 16}"
    assert layout.control_answer("ab" * 16) == f"wxtoken:control:answer:{'ab' * 16}"
    assert layout.upstream_errors == "wxtoken:upstream_errors"


def test_an_answer_without_a_version_reads_as_before() -> None:
    """A quota clear's answer carries no `version` (nor a null errcode) on the wire, so a CLI
    that predates refresh verdicts still decodes it; a refresh's answer carries its version."""
    from consumer_lib.wire.control import ControlAction, ControlAnswer, ControlResult

    cleared = ControlAnswer(
        request_id="ab" * 16,
        action=ControlAction.CLEAR_QUOTA,
        app_id="wxapp1",
        result=ControlResult.DONE,
        message="quota cleared",
        producer_id="producer-a",
        answered_at=1_800_000_000.0,
    )
    assert set(json.loads(cleared.encode())) == {
        "request_id",
        "action",
        "app_id",
        "result",
        "message",
        "producer_id",
        "answered_at",
    }
    replaced = cleared.model_copy(update={"action": ControlAction.REFRESH, "version": 7})
    assert ControlAnswer.decode(replaced.encode()).version == 7
