"""Issue 18 item 7: control requests have a role of their own: their own trusted keys
(WXTOKEN_CONTROL_KEYS), a domain tag in what is signed, and clears spaced per app."""

from __future__ import annotations

import time
from pathlib import Path

import fakeredis
import pytest
import responses
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import SecretStr

from consumer_lib.amqp import Delivery
from consumer_lib.wire.control import (
    CONTROL_MESSAGE_TYPE,
    ControlAction,
    ControlAnswer,
    ControlRequest,
    ControlResult,
    new_request_id,
)
from consumer_lib.wire.keys import KeyLayout
from consumer_lib.wire.signing import generate_keypair, key_id, load_private_key, seal
from producer.app_config import AppConfig
from producer.messaging.control import ControlHandler, control_keys
from producer.settings import ProducerSettings
from producer.upstream.wechat import WeChatClient
from tests.conftest import FakeClock

BASE = "https://wechat.test"
CLEAR_URL = f"{BASE}/cgi-bin/clear_quota/v2"
APPS = ("wxquota00000001", "wxquota00000002")
KEYS = KeyLayout("wxunit")
OPERATOR = Ed25519PrivateKey.generate()


@pytest.fixture
def now(clock: FakeClock) -> FakeClock:
    clock.now_s = float(int(time.time()))
    return clock


@pytest.fixture
def fake_redis() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


def handler(client: fakeredis.FakeRedis, now: FakeClock, min_interval_s: float) -> ControlHandler:
    return ControlHandler(
        client,
        KEYS,
        apps=[AppConfig(app_id=a, secret=SecretStr(f"secret-{a}")) for a in APPS],
        upstream=WeChatClient(BASE),
        verify_keys=[OPERATOR.public_key()],
        is_leader=lambda: True,
        producer_id="producer-a",
        clock=now,
        run=lambda work: work(),
        min_interval_s=min_interval_s,
    )


def clear(
    target: ControlHandler, client: fakeredis.FakeRedis, now_s: float, app_id: str
) -> ControlAnswer | None:
    request = ControlRequest(
        action=ControlAction.CLEAR_QUOTA,
        app_id=app_id,
        request_id=new_request_id(),
        operator="ops:alice@host",
        issued_at=now_s,
    )
    target.handle(
        Delivery(request.seal(OPERATOR), user_id=None, app_id="ops", type=CONTROL_MESSAGE_TYPE)
    )
    raw = client.get(KEYS.control_answer(request.request_id))
    return None if raw is None else ControlAnswer.decode(raw)


def clear_calls() -> int:
    return sum(1 for call in responses.calls if call.request.url == CLEAR_URL)


@responses.activate
def test_a_signature_made_without_the_control_domain_is_refused(
    fake_redis: fakeredis.FakeRedis, now: FakeClock
) -> None:
    """The operator's key signing the same payload for another purpose (no domain tag, as
    an override's signature is) makes no control request: bad signature, nothing called."""
    responses.post(CLEAR_URL, json={"errcode": 0, "errmsg": "ok"})
    target = handler(fake_redis, now, 0)
    request = ControlRequest(
        action=ControlAction.CLEAR_QUOTA,
        app_id=APPS[0],
        request_id=new_request_id(),
        operator="ops:alice@host",
        issued_at=now(),
    )
    untagged = seal(OPERATOR, request.model_dump_json().encode())
    target.handle(Delivery(untagged, user_id=None, app_id="ops", type=CONTROL_MESSAGE_TYPE))
    assert clear_calls() == 0
    assert target.stats.rejected == 1
    assert clear(target, fake_redis, now(), APPS[0]) is not None  # the tagged one works
    assert clear_calls() == 1


def test_control_keys_are_their_own_setting(tmp_path: Path) -> None:
    """Only WXTOKEN_CONTROL_KEYS signs control requests: not the keys trusted for overrides
    (WXTOKEN_VERIFY_KEYS, the gateway's among them), nor the producer's own signing key;
    unset, none does."""
    producer_key, _ = generate_keypair(tmp_path / "producer.key")
    _, gateway_public = generate_keypair(tmp_path / "gateway.key")
    _, control_public = generate_keypair(tmp_path / "control.key")
    base = {
        "apps_file": tmp_path / "apps.toml",
        "signing_key_file": producer_key,
        "verify_keys": str(gateway_public),
    }
    assert control_keys(ProducerSettings(**base)) == []  # type: ignore[arg-type]
    keys = control_keys(ProducerSettings(**base, control_keys=str(control_public)))  # type: ignore[arg-type]
    control_id = key_id(load_private_key(tmp_path / "control.key").public_key())
    assert [key_id(k) for k in keys] == [control_id]


@responses.activate
def test_clears_of_one_app_are_spaced(fake_redis: fakeredis.FakeRedis, now: FakeClock) -> None:
    """With an hour's spacing, a second clear of the same app is refused (answered, no
    upstream call) while another app's goes through: a stolen control key cannot spend an
    app's 10 monthly clears in 10 requests."""
    responses.post(CLEAR_URL, json={"errcode": 0, "errmsg": "ok"})
    target = handler(fake_redis, now, 3600)
    first = clear(target, fake_redis, now(), APPS[0])
    assert first is not None
    assert first.result is ControlResult.DONE
    for _ in range(9):
        again = clear(target, fake_redis, now(), APPS[0])
        assert again is not None
        assert again.result is ControlResult.REFUSED
        assert "WXTOKEN_CLEAR_QUOTA_MIN_INTERVAL_S" in again.message
    other = clear(target, fake_redis, now(), APPS[1])
    assert other is not None
    assert other.result is ControlResult.DONE
    assert clear_calls() == 2


@responses.activate
def test_a_transient_failure_gives_the_spacing_back(
    fake_redis: fakeredis.FakeRedis, now: FakeClock
) -> None:
    """WeChat busy (-1) cleared nothing: the next request may try again at once."""
    responses.post(CLEAR_URL, json={"errcode": -1, "errmsg": "system busy"})
    responses.post(CLEAR_URL, json={"errcode": 0, "errmsg": "ok"})
    target = handler(fake_redis, now, 3600)
    failed = clear(target, fake_redis, now(), APPS[0])
    assert failed is not None
    assert failed.result is ControlResult.FAILED
    done = clear(target, fake_redis, now(), APPS[0])
    assert done is not None
    assert done.result is ControlResult.DONE
