"""The XML of a push, read safely: the outer envelope and the decrypted event.

Both are small, flat `<xml>` documents. They are parsed with the standard library's
ElementTree only after a size check and only when they declare no DOCTYPE (so no entity,
internal or external, can be defined: no billion laughs, no file or network reads). Anything
else is `CallbackRejected("malformed")`.
"""

from __future__ import annotations

import hashlib
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, replace
from typing import cast, get_args

from producer.platform.errors import CallbackRejected
from producer.platform.events import InfoType, PlatformEvent

#: The largest envelope or decrypted message read (WeChat's are well under 2 KiB).
MAX_XML_BYTES = 64 * 1024
_DECLARATIONS = re.compile(rb"<!(DOCTYPE|ENTITY)", re.IGNORECASE)
_KNOWN: frozenset[str] = frozenset(get_args(InfoType)) - {"other"}
_APPID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_SHORT = 512  # the longest single field kept from an event (tickets are ~100 characters)


def _root(raw: bytes | str, what: str) -> ET.Element:
    data = raw.encode("utf-8") if isinstance(raw, str) else raw
    if len(data) > MAX_XML_BYTES:
        raise CallbackRejected("too_large", f"{what} over {MAX_XML_BYTES} bytes")
    if _DECLARATIONS.search(data):
        raise CallbackRejected("malformed", f"{what} declares a DOCTYPE or an entity")
    try:
        # No DOCTYPE (checked above), so no entity can be declared; the size is bounded.
        root = ET.fromstring(data)  # noqa: S314 (defusedxml's checks, done above)
    except (ET.ParseError, ValueError):
        raise CallbackRejected("malformed", f"{what} is not XML") from None
    if root.tag != "xml" or len(root) == 0:
        raise CallbackRejected("malformed", f"{what} is not a WeChat <xml> message")
    return root


def _fields(root: ET.Element, what: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for child in root:
        if len(child) or child.tag in fields:
            raise CallbackRejected("malformed", f"{what} is not a flat list of fields")
        fields[child.tag] = (child.text or "").strip()
    return fields


@dataclass(frozen=True, slots=True)
class Envelope:
    """The outer, unencrypted body of a push."""

    #: `AppId` (authorization events name the component appid there); empty when absent
    #: (message pushes carry the account's `ToUserName` instead, which is not an appid).
    appid: str
    encrypt: str

    @property
    def push_id(self) -> str:
        """The same for every retry of one push: sha1 hex of the Encrypt value."""
        return hashlib.sha1(self.encrypt.encode(), usedforsecurity=False).hexdigest()


def parse_envelope(body: bytes) -> Envelope:
    """`<xml><AppId/><Encrypt/></xml>` as WeChat POSTs it."""
    fields = _fields(_root(body, "the body"), "the body")
    encrypt = fields.get("Encrypt", "")
    if not encrypt:
        raise CallbackRejected("malformed", "the body has no Encrypt")
    return Envelope(appid=fields.get("AppId", ""), encrypt=encrypt)


def _int(fields: dict[str, str], name: str, *, required: bool) -> int | None:
    value = fields.get(name)
    if value is None or value == "":
        if required:
            raise CallbackRejected("malformed", f"the message has no {name}")
        return None
    if not value.isdigit() or len(value) > 12:
        raise CallbackRejected("malformed", f"{name} is not a number of seconds")
    return int(value)


def _text(fields: dict[str, str], name: str, *, required: bool) -> str | None:
    value = fields.get(name) or None
    if value is None:
        if required:
            raise CallbackRejected("malformed", f"the message has no {name}")
        return None
    if len(value) > _SHORT or not value.isprintable():
        raise CallbackRejected("malformed", f"{name} is too long or not printable")
    return value


def parse_event(
    xml: str, *, component_appid: str, push_id: str, received_at_s: float
) -> PlatformEvent:
    """The decrypted message as a `PlatformEvent`; the fields its InfoType needs must be there.

    An unknown InfoType is kept as "other" (WeChat adds event types; they are stored and
    ignored), but every event must name the component appid it was sent for."""
    fields = _fields(_root(xml, "the message"), "the message")
    raw_type = _text(fields, "InfoType", required=True) or ""
    if not re.fullmatch(r"[A-Za-z0-9_]{1,64}", raw_type):
        raise CallbackRejected("malformed", "InfoType is not a word")
    appid = fields.get("AppId", "")
    if appid != component_appid:
        raise CallbackRejected("wrong_appid", "the message's AppId is another platform's")
    info_type = cast(InfoType, raw_type if raw_type in _KNOWN else "other")
    create_time_s = _int(fields, "CreateTime", required=True)
    assert create_time_s is not None
    event = PlatformEvent(
        component_appid=component_appid,
        info_type=info_type,
        raw_info_type=raw_type,
        create_time_s=create_time_s,
        received_at_s=received_at_s,
        push_id=push_id,
    )
    if info_type == "component_verify_ticket":
        ticket = _text(fields, "ComponentVerifyTicket", required=True)
        return replace(event, verify_ticket=ticket)
    if info_type == "other":
        return event
    authorizer = _text(fields, "AuthorizerAppid", required=True)
    if authorizer is None or not _APPID.fullmatch(authorizer):
        raise CallbackRejected("malformed", "AuthorizerAppid is not an appid")
    if info_type == "unauthorized":
        return replace(event, authorizer_appid=authorizer)
    return replace(
        event,
        authorizer_appid=authorizer,
        authorization_code=_text(fields, "AuthorizationCode", required=True),
        authorization_code_expires_at_s=_int(fields, "AuthorizationCodeExpiredTime", required=True),
        pre_auth_code=_text(fields, "PreAuthCode", required=False),
    )
