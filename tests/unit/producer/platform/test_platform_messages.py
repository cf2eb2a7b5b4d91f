"""The XML of a push: the envelope, each InfoType of the decrypted message, and garbage."""

from __future__ import annotations

import hashlib

import pytest

from producer.platform.errors import CallbackRejected
from producer.platform.events import PlatformEvent
from producer.platform.messages import MAX_XML_BYTES, parse_envelope, parse_event

APPID = "wx134c8103faa5a59e"
PUSH_ID = "a" * 40


def event_xml(info_type: str, **fields: str) -> str:
    body = "".join(f"<{k}><![CDATA[{v}]]></{k}>" for k, v in fields.items())
    return (
        f"<xml><AppId><![CDATA[{APPID}]]></AppId><CreateTime>1413192605</CreateTime>"
        f"<InfoType><![CDATA[{info_type}]]></InfoType>{body}</xml>"
    )


def parse(xml: str) -> PlatformEvent:
    return parse_event(xml, component_appid=APPID, push_id=PUSH_ID, received_at_s=1.5)


def rejected(reason: str, xml: str) -> None:
    with pytest.raises(CallbackRejected) as info:
        parse(xml)
    assert info.value.reason == reason


def test_envelope() -> None:
    """The body's AppId and Encrypt; push_id is the sha1 of Encrypt (the same on retries)."""
    envelope = parse_envelope(
        f"<xml><AppId><![CDATA[{APPID}]]></AppId><Encrypt><![CDATA[QUJD]]></Encrypt></xml>".encode()
    )
    assert (envelope.appid, envelope.encrypt) == (APPID, "QUJD")
    assert envelope.push_id == hashlib.sha1(b"QUJD", usedforsecurity=False).hexdigest()
    assert parse_envelope(b"<xml><Encrypt>QUJD</Encrypt></xml>").push_id == envelope.push_id


def test_envelope_of_a_message_push_has_no_appid() -> None:
    """A message push names the account in ToUserName, which is not an appid: none is kept."""
    envelope = parse_envelope(b"<xml><ToUserName>gh_1</ToUserName><Encrypt>QUJD</Encrypt></xml>")
    assert (envelope.appid, envelope.encrypt) == ("", "QUJD")


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "malformed"),
        (b"not xml", "malformed"),
        (b"<xml></xml>", "malformed"),
        (b"<xml><AppId>x</AppId></xml>", "malformed"),  # no Encrypt
        (b"<xml><Encrypt></Encrypt></xml>", "malformed"),
        (b"<html><Encrypt>QUJD</Encrypt></html>", "malformed"),
        (b"<xml><Encrypt>QUJD</Encrypt><Encrypt>QUJE</Encrypt></xml>", "malformed"),
        (b"<xml><Encrypt><a>QUJD</a></Encrypt></xml>", "malformed"),
        (b"\xff\xfe<xml>", "malformed"),
        (
            b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
            b"<xml><Encrypt>&e;</Encrypt></xml>",
            "malformed",
        ),
        (
            b'<!DOCTYPE x [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]>'
            b"<xml><Encrypt>&b;</Encrypt></xml>",
            "malformed",
        ),
        (b"<xml><Encrypt>" + b"A" * MAX_XML_BYTES + b"</Encrypt></xml>", "too_large"),
    ],
)
def test_envelope_garbage(body: bytes, reason: str) -> None:
    """Anything but a flat <xml> with one Encrypt, entities included, is refused."""
    with pytest.raises(CallbackRejected) as info:
        parse_envelope(body)
    assert info.value.reason == reason


def test_component_verify_ticket() -> None:
    """The ticket push: its ticket and CreateTime."""
    event = parse(event_xml("component_verify_ticket", ComponentVerifyTicket="ticket@@@abc"))
    assert event.info_type == "component_verify_ticket"
    assert event.verify_ticket == "ticket@@@abc"
    assert (event.component_appid, event.create_time_s, event.push_id) == (
        APPID,
        1413192605,
        PUSH_ID,
    )
    assert event.received_at_s == 1.5
    assert event.authorizer_appid is None


@pytest.mark.parametrize("info_type", ["authorized", "updateauthorized"])
def test_authorization(info_type: str) -> None:
    """authorized / updateauthorized: the authorizer, its code, the code's expiry."""
    event = parse(
        event_xml(
            info_type,
            AuthorizerAppid="wxf8b4f85f3a794e77",
            AuthorizationCode="queryauthcode@@@abc",
            AuthorizationCodeExpiredTime="1413196205",
            PreAuthCode="preauthcode@@@xyz",
        )
    )
    assert event.info_type == info_type
    assert event.authorizer_appid == "wxf8b4f85f3a794e77"
    assert event.authorization_code == "queryauthcode@@@abc"
    assert event.authorization_code_expires_at_s == 1413196205
    assert event.pre_auth_code == "preauthcode@@@xyz"
    assert event.verify_ticket is None


def test_unauthorized() -> None:
    """unauthorized: only the authorizer."""
    event = parse(event_xml("unauthorized", AuthorizerAppid="wxf8b4f85f3a794e77"))
    assert event.info_type == "unauthorized"
    assert event.authorizer_appid == "wxf8b4f85f3a794e77"
    assert event.authorization_code is None


def test_unknown_info_type_is_other() -> None:
    """An InfoType WeChat adds later is kept as 'other' with its name."""
    event = parse(event_xml("notify_third_fasteregister", Foo="bar"))
    assert (event.info_type, event.raw_info_type) == ("other", "notify_third_fasteregister")


@pytest.mark.parametrize(
    ("xml", "reason"),
    [
        (event_xml("component_verify_ticket"), "malformed"),  # no ticket
        (event_xml("authorized", AuthorizerAppid="wx1"), "malformed"),  # no code
        (
            event_xml(
                "authorized",
                AuthorizerAppid="wx1",
                AuthorizationCode="c",
                AuthorizationCodeExpiredTime="soon",
            ),
            "malformed",
        ),
        (event_xml("unauthorized"), "malformed"),  # no authorizer
        (event_xml("unauthorized", AuthorizerAppid="wx 1"), "malformed"),
        (event_xml("unauthorized", AuthorizerAppid="x" * 65), "malformed"),
        (event_xml("a b"), "malformed"),
        (event_xml("component_verify_ticket", ComponentVerifyTicket="t" * 600), "malformed"),
        (
            event_xml("component_verify_ticket", ComponentVerifyTicket="t").replace(
                "<CreateTime>1413192605</CreateTime>", ""
            ),
            "malformed",
        ),
        (
            event_xml("component_verify_ticket", ComponentVerifyTicket="t").replace(APPID, "wx2"),
            "wrong_appid",
        ),
        ("<xml><a>1</a></xml>", "malformed"),  # no InfoType
        ("我是中文abcd123", "malformed"),
        ("<xml><InfoType>x</InfoType><InfoType>y</InfoType></xml>", "malformed"),
    ],
)
def test_event_garbage(xml: str, reason: str) -> None:
    """A message missing what its InfoType needs, another platform's, or not XML: refused."""
    rejected(reason, xml)
