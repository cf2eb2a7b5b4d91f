"""The refresh request wire contract: round trip, strict decoding, and no token on the wire."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from typing import Any

import pika.exceptions
import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumer_lib import ClientSettings, InvalidUpdate, TokenKind
from consumer_lib._client.subscriber import Subscriber
from consumer_lib.amqp import (
    Connection,
    declare_requests_exchange,
    publish_request,
    request_properties,
)
from consumer_lib.wire.refresh_request import (
    MAX_REQUEST_BYTES,
    REQUEST_MESSAGE_TYPE,
    REQUEST_TTL_MS,
    RefreshRequest,
    fingerprint,
    requests_exchange,
    safe_requester,
)
from tests.unit._helpers import T0

TOKEN = "SECRETTOKEN_0123456789abcdefghij"
SHA = hashlib.sha256(TOKEN.encode()).hexdigest()


def good_dict(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "app_id": "wxapp1",
        "kind": "access_token",
        "token_sha256": SHA,
        "reported_version": 7,
        "requester": "client:host-123",
        "requested_at": T0,
        "reason": "errcode 40001",
    }
    data.update(changes)
    return data


def without(name: str) -> dict[str, Any]:
    data = good_dict()
    del data[name]
    return data


def decode_error(raw: Any) -> InvalidUpdate:
    with pytest.raises(InvalidUpdate) as caught:
        RefreshRequest.decode(raw)
    return caught.value


class FakeChannel:
    """Records `exchange_declare` and `basic_publish` calls."""

    def __init__(self) -> None:
        self.declared: list[dict[str, Any]] = []
        self.published: list[dict[str, Any]] = []

    def exchange_declare(self, **kwargs: Any) -> None:
        self.declared.append(kwargs)

    def basic_publish(self, **kwargs: Any) -> None:
        self.published.append(kwargs)


# ------------------------------------------------------------------ good input
def test_encode_decode_round_trip_keeps_every_field() -> None:
    """A request survives encode() and decode() unchanged."""
    request = RefreshRequest.decode(json.dumps(good_dict()))
    assert RefreshRequest.decode(request.encode()) == request
    assert request.model_dump(mode="json") == good_dict()


def test_for_token_carries_the_fingerprint_and_never_the_token() -> None:
    """`for_token` keeps only the token's SHA-256; the encoding never holds the token."""
    request = RefreshRequest.for_token(
        "wxapp1", TOKEN, requester="ops:me@host", now_s=T0, reported_version=3
    )
    assert request.token_sha256 == SHA == fingerprint(TOKEN)
    assert request.is_about(TOKEN)
    assert not request.is_about(TOKEN + "x")
    assert TOKEN not in request.encode().decode()
    assert TOKEN not in repr(request)
    assert TOKEN not in str(request)


def test_optional_fields_have_defaults() -> None:
    """kind defaults to access_token; reported_version and reason to None."""
    minimal = {k: v for k, v in good_dict().items() if k not in ("kind", "reported_version")}
    del minimal["reason"]
    request = RefreshRequest.decode(json.dumps(minimal))
    assert request.kind is TokenKind.ACCESS_TOKEN
    assert request.reported_version is None
    assert request.reason is None


def test_integer_timestamp_and_text_input_are_accepted() -> None:
    """An integral requested_at and a str body decode like floats and bytes."""
    request = RefreshRequest.decode(json.dumps(good_dict(requested_at=int(T0))))
    assert request.requested_at == T0
    assert RefreshRequest.decode(request.encode().decode()) == request


def test_str_names_the_app_and_a_short_fingerprint() -> None:
    """`str()` shows app, kind, version, 12 hex digits of the fingerprint and the requester."""
    text = str(RefreshRequest.decode(json.dumps(good_dict())))
    assert text == f"wxapp1/access_token v7 sha256:{SHA[:12]} from client:host-123"


def test_fingerprint_is_lowercase_sha256_hex() -> None:
    """`fingerprint` is 64 lowercase hex digits of SHA-256 of the UTF-8 token."""
    assert fingerprint("abc") == hashlib.sha256(b"abc").hexdigest()
    assert len(fingerprint(TOKEN)) == 64


def test_requests_exchange_is_declared_fanout_and_durable() -> None:
    """The requests exchange sits next to the token exchange, fanout and durable."""
    channel = FakeChannel()
    declare_requests_exchange(channel, "wxtoken.tokens")
    assert requests_exchange("wxtoken.tokens") == "wxtoken.tokens.requests"
    assert channel.declared == [
        {"exchange": "wxtoken.tokens.requests", "exchange_type": "fanout", "durable": True}
    ]


def test_publish_request_is_transient_expiring_and_not_mandatory() -> None:
    """A published request is typed, transient, short-lived and not mandatory."""
    channel = FakeChannel()
    request = RefreshRequest.decode(json.dumps(good_dict()))
    publish_request(channel, "ex", request, sender="ops:me@host", now_s=T0)
    (call,) = channel.published
    assert call["exchange"] == "ex.requests"
    assert call["mandatory"] is False
    assert RefreshRequest.decode(call["body"]) == request
    properties = call["properties"]
    assert properties.type == REQUEST_MESSAGE_TYPE
    assert properties.expiration == str(REQUEST_TTL_MS)
    assert properties.delivery_mode == 1
    assert request_properties(sender="s", now_s=T0).timestamp == int(T0)


# ------------------------------------------------------------------ bad input
BAD_INPUTS: dict[str, bytes | str] = {
    "not json": b"not json " + TOKEN.encode(),
    "empty": b"",
    "json array": json.dumps([good_dict()]),
    "json null": b"null",
    "missing app_id": json.dumps(without("app_id")),
    "missing token_sha256": json.dumps(without("token_sha256")),
    "missing requester": json.dumps(without("requester")),
    "missing requested_at": json.dumps(without("requested_at")),
    "the token instead of its hash": json.dumps(good_dict(token_sha256=TOKEN)),
    "uppercase hash": json.dumps(good_dict(token_sha256=SHA.upper())),
    "short hash": json.dumps(good_dict(token_sha256=SHA[:63])),
    "long hash": json.dumps(good_dict(token_sha256=SHA + "0")),
    "hash with newline": json.dumps(good_dict(token_sha256=SHA + "\n")),
    "token field": json.dumps(good_dict(value=TOKEN)),
    "unknown field": json.dumps(good_dict(extra=1)),
    "bad app_id": json.dumps(good_dict(app_id="wx app/1")),
    "unknown kind": json.dumps(good_dict(kind="refresh_token")),
    "version 0": json.dumps(good_dict(reported_version=0)),
    "negative version": json.dumps(good_dict(reported_version=-1)),
    "version 2**53": json.dumps(good_dict(reported_version=2**53)),
    "string version": json.dumps(good_dict(reported_version="7")),
    "float version": json.dumps(good_dict(reported_version=7.0)),
    "bool version": json.dumps(good_dict(reported_version=True)),
    "empty requester": json.dumps(good_dict(requester="")),
    "long requester": json.dumps(good_dict(requester="r" * 129)),
    "number requester": json.dumps(good_dict(requester=5)),
    "zero requested_at": json.dumps(good_dict(requested_at=0)),
    "negative requested_at": json.dumps(good_dict(requested_at=-1.0)),
    "string requested_at": json.dumps(good_dict(requested_at=str(T0))),
    "bool requested_at": json.dumps(good_dict(requested_at=True)),
    "NaN requested_at": json.dumps(good_dict(requested_at=math.nan)),
    "Infinity requested_at": json.dumps(good_dict(requested_at=math.inf)),
    "overflowing requested_at": json.dumps(good_dict()).replace(str(T0), "1e400"),
    "long reason": json.dumps(good_dict(reason="r" * 257)),
    "invalid utf-8": json.dumps(good_dict()).encode().replace(b"host", b"h\xff\xfe"),
    "lone surrogate in text": json.dumps(good_dict(), ensure_ascii=False) + "\ud800",
    "deeply nested": "[" * 5000 + "]" * 5000,
    "over 4 KiB": json.dumps(good_dict(reason=None, padding="x" * MAX_REQUEST_BYTES)),
}


@pytest.mark.parametrize("raw", BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_bad_input_raises_one_line_invalid_update(raw: bytes | str) -> None:
    """Every malformed request raises a one-line `InvalidUpdate` naming it as a request."""
    message = str(decode_error(raw))
    assert message.startswith("invalid refresh request: ")
    assert "\n" not in message
    assert TOKEN not in message


def test_non_bytes_input_is_invalid_update() -> None:
    """Something that is neither bytes nor str is refused as `InvalidUpdate`."""
    assert "int" in str(decode_error(12345))


def test_oversized_message_is_refused_by_size() -> None:
    """A body over 4 KiB is refused before parsing, naming the limit."""
    assert str(MAX_REQUEST_BYTES) in str(decode_error(b" " * (MAX_REQUEST_BYTES + 1)))


def test_error_names_the_bad_field() -> None:
    """The message names the field that is wrong."""
    assert "token_sha256" in str(decode_error(json.dumps(good_dict(token_sha256="x"))))


def test_constructor_rejects_bad_values_too() -> None:
    """Building a request in code validates like decoding (a ValueError subclass)."""
    with pytest.raises(ValueError, match="requested_at"):
        RefreshRequest.for_token("wxapp1", TOKEN, requester="me", now_s=0)


# ------------------------------------------------------------------ properties
def assert_sane(request: RefreshRequest) -> None:
    assert len(request.token_sha256) == 64
    assert request.requested_at > 0
    assert math.isfinite(request.requested_at)
    assert 1 <= len(request.requester) <= 128
    assert RefreshRequest.decode(request.encode()) == request


@given(st.binary(max_size=1024))
def test_decode_of_arbitrary_bytes_raises_only_invalid_update(raw: bytes) -> None:
    """Random bytes either decode to a sane request or raise `InvalidUpdate`."""
    try:
        request = RefreshRequest.decode(raw)
    except InvalidUpdate:
        return
    assert_sane(request)


@given(
    st.fixed_dictionaries(
        {},
        optional={
            "app_id": st.from_regex(r"[A-Za-z0-9_.-]{1,64}", fullmatch=True) | st.integers(),
            "kind": st.sampled_from(["access_token", "jsapi_ticket", "x"]),
            "token_sha256": st.from_regex(r"[0-9a-fA-F]{62,66}", fullmatch=True),
            "reported_version": st.none() | st.integers(-2, 2**54) | st.floats(),
            "requester": st.text(max_size=130),
            "requested_at": st.floats() | st.integers(-5, 2**40),
            "reason": st.none() | st.text(max_size=260),
            "value": st.just(TOKEN),
        },
    )
)
def test_decode_of_json_ish_dicts_raises_only_invalid_update(data: dict[str, Any]) -> None:
    """Dicts of right and wrong fields decode sanely or raise `InvalidUpdate` without the token."""
    message = ""
    try:
        assert_sane(RefreshRequest.decode(json.dumps(data)))
    except InvalidUpdate as exc:
        message = str(exc)
    assert TOKEN not in message


@given(st.from_regex(r"TOKEN[!-~]{0,500}", fullmatch=True))
def test_no_token_ever_appears_in_an_encoded_request(token: str) -> None:
    """Whatever the token, the encoded request holds only its fingerprint."""
    encoded = RefreshRequest.for_token("wxapp1", token, requester="r", now_s=T0).encode()
    assert fingerprint(token).encode() in encoded
    assert b"TOKEN" not in encoded


# ------------------------------------------------------------------ Subscriber.send
class FakeConnection:
    """Runs thread-safe callbacks when told; its channel fails when `fail` is set."""

    def __init__(self, *, fail: bool = False) -> None:
        self.callbacks: list[Callable[[], None]] = []
        self.channel_obj = FakeChannel()
        self.fail = fail

    def add_callback_threadsafe(self, callback: Callable[[], None]) -> None:
        self.callbacks.append(callback)

    def channel(self) -> FakeChannel:
        if self.fail:
            raise pika.exceptions.ConnectionWrongStateError("connection closed")
        return self.channel_obj

    def run_callbacks(self) -> None:
        for callback in self.callbacks:
            callback()


def make_subscriber() -> Subscriber:
    subscriber = Subscriber(
        ClientSettings(
            insecure_accept_unsigned=True, amqp_url="amqp://guest:guest@127.0.0.1:1/%2F"
        ),
        connection_name="client:test-1",
    )
    subscriber.attach(
        on_body=lambda body, user_id, sent_s: None,
        read_snapshot=lambda: None,
        snapshot_wanted=lambda: False,
        callbacks_idle=lambda timeout_s: True,
    )
    return subscriber


def test_send_while_disconnected_returns_false() -> None:
    """A subscriber that never connected cannot send and says so."""
    assert make_subscriber().send("ex.requests", b"{}", REQUEST_MESSAGE_TYPE) is False


def test_send_schedules_a_transient_expiring_publish_on_the_connection() -> None:
    """`send` hands the publish to the connection's thread; it goes out not mandatory."""
    subscriber = make_subscriber()
    connection = FakeConnection()
    subscriber._live = Connection(connection)  # type: ignore[arg-type]
    subscriber._connected.set()
    assert subscriber.send("ex.requests", b"body", REQUEST_MESSAGE_TYPE) is True
    assert connection.channel_obj.published == []  # nothing until the thread runs it
    connection.run_callbacks()
    [call] = connection.channel_obj.published
    assert (call["exchange"], call["body"], call["mandatory"]) == ("ex.requests", b"body", False)
    assert call["properties"].type == REQUEST_MESSAGE_TYPE
    assert call["properties"].expiration == str(REQUEST_TTL_MS)
    assert call["properties"].delivery_mode == 1


def test_a_failing_send_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    """An AMQP error inside the scheduled publish is one WARNING, never an exception."""
    subscriber = make_subscriber()
    connection = FakeConnection(fail=True)
    subscriber._live = Connection(connection)  # type: ignore[arg-type]
    subscriber._connected.set()
    assert subscriber.send("ex.requests", b"body", REQUEST_MESSAGE_TYPE)
    connection.run_callbacks()
    [record] = [r for r in caplog.records if r.name == "consumer_lib._client.subscriber"]
    assert record.levelname == "WARNING"
    assert "ConnectionWrongStateError" in record.getMessage()


@pytest.mark.parametrize(
    "requester",
    [
        "client:host\nERROR producer: forged line",
        "client:host\r\x1b[31mred",
        "ops:alice bob@host",
        "client:\u2028host",
        "ops:ålice@host",
        "",
        "x" * 129,
    ],
    ids=repr,
)
def test_a_requester_outside_the_safe_alphabet_is_refused(requester: str) -> None:
    """A requester with control characters, spaces or non-ASCII (it is logged) is refused."""
    good = RefreshRequest.for_token("wxapp1", "TOKEN", requester="client:h-1", now_s=T0)
    raw = json.loads(good.encode())
    raw["requester"] = requester
    with pytest.raises(InvalidUpdate, match="requester"):
        RefreshRequest.decode(json.dumps(raw))


def test_a_reason_with_control_characters_is_refused() -> None:
    """The free-text reason is logged too: no control characters or line separators."""
    good = RefreshRequest.for_token("wxapp1", "TOKEN", requester="client:h-1", now_s=T0)
    for reason in ("40001\nERROR forged", "x\x1b[2J", "a\u2028b"):
        raw = json.loads(good.encode())
        raw["reason"] = reason
        with pytest.raises(InvalidUpdate, match="reason"):
            RefreshRequest.decode(json.dumps(raw))


def test_safe_requester_keeps_requests_valid_on_odd_hosts() -> None:
    """Our own requesters are built with safe_requester, so an odd host or user name still
    makes a valid request."""
    requester = safe_requester("ops:Jöhn Doe@host\nname" + "y" * 200)
    assert len(requester) == 128
    request = RefreshRequest.for_token("wxapp1", "TOKEN", requester=requester, now_s=T0)
    assert RefreshRequest.decode(request.encode()).requester == requester
    assert "\n" not in requester
    assert " " not in requester
