"""A platform registry for unit tests: the real `PlatformRegistry` (its SQL, its sealing) on an
in-memory SQLite database, on the fake clock; and a push as WeChat encrypts it."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.pool import StaticPool

from producer.platform.crypto import MessageCrypto
from producer.platform.events import PlatformEvent
from producer.platform.registry import PlatformRegistry
from producer.platform.schema import metadata
from producer.platform.sealing import Sealer
from tests.conftest import FakeClock

COMPONENT = "wxcomponent0000001"
COMPONENT_SECRET = "component-secret"
PLATFORM_TOKEN = "pamtest"
AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
WECHAT = "https://api.weixin.qq.com"


@pytest.fixture
def engine() -> sa.Engine:
    """One in-memory SQLite database with the registry's tables (the test reads it too)."""
    made = sa.create_engine("sqlite://", poolclass=StaticPool)
    metadata.create_all(made)
    return made


@pytest.fixture
def registry(engine: sa.Engine, clock: FakeClock) -> Iterator[PlatformRegistry]:
    opened = PlatformRegistry(engine, Sealer([os.urandom(32)]), clock)
    yield opened
    opened.close()


def crypto() -> MessageCrypto:
    return MessageCrypto(token=PLATFORM_TOKEN, encoding_aes_key=AES_KEY, appid=COMPONENT)


def store_push(registry: PlatformRegistry, xml_fields: dict[str, str], *, now_s: float) -> str:
    """Store a push the receiver accepted (its Encrypt as WeChat makes it); its push_id."""
    body = "".join(f"<{k}><![CDATA[{v}]]></{k}>" for k, v in xml_fields.items())
    encrypt = crypto().encrypt(f"<xml><AppId>{COMPONENT}</AppId>{body}</xml>")
    push_id = hashlib.sha1(encrypt.encode()).hexdigest()  # noqa: S324 - an identifier
    info_type = xml_fields["InfoType"]
    event = PlatformEvent(
        component_appid=COMPONENT,
        info_type=info_type,  # type: ignore[arg-type]  # the tests use the known ones
        raw_info_type=info_type,
        create_time_s=int(now_s),
        received_at_s=now_s,
        push_id=push_id,
        verify_ticket=xml_fields.get("ComponentVerifyTicket"),
        authorizer_appid=xml_fields.get("AuthorizerAppid"),
    )
    assert registry.record_callback(event, encrypt)
    return push_id
