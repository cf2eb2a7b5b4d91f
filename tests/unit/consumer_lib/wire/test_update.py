"""The wire contract: `TokenUpdate` encoding, decoding, validation, and masking."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from consumer_lib import InvalidUpdate, TokenKind, TokenSource, TokenUpdate, mask
from consumer_lib.wire.update import MAX_ENCODED_BYTES, MAX_LIFETIME_S, MAX_TOKEN_CHARS
from tests.unit._helpers import T0, make_update

TOKEN = "SECRETTOKEN_0123456789abcdefghij"
FIELDS = (
    "app_id",
    "kind",
    "value",
    "expires_at",
    "issued_at",
    "version",
    "source",
    "producer_id",
    "reason",
)


def good_dict(**changes: Any) -> dict[str, Any]:
    """A valid update as a JSON-able dict, with `changes` applied."""
    data: dict[str, Any] = {
        "app_id": "wxapp1",
        "kind": "access_token",
        "value": TOKEN,
        "expires_at": T0 + 7200,
        "issued_at": T0,
        "version": 42,
        "source": "refresh",
        "producer_id": "prod-1",
        "reason": None,
    }
    data.update(changes)
    return data


def without(*names: str) -> dict[str, Any]:
    """A valid update dict with the named fields removed."""
    return {k: v for k, v in good_dict().items() if k not in names}


def decode_error(raw: bytes | str) -> InvalidUpdate:
    """Decode `raw`, which must fail with `InvalidUpdate`, and return the error."""
    with pytest.raises(InvalidUpdate) as info:
        TokenUpdate.decode(raw)
    return info.value


# ------------------------------------------------------------------ round trip
def test_encode_decode_round_trip_keeps_every_field() -> None:
    """An update decoded from its own encoding equals the original."""
    update = make_update(
        value=TOKEN,
        version=7,
        kind=TokenKind.JSAPI_TICKET,
        source=TokenSource.OVERRIDE,
        reason="rotated by ops",
    )
    assert TokenUpdate.decode(update.encode()) == update


def test_decode_accepts_text_as_well_as_bytes() -> None:
    """A JSON str decodes to the same update as its UTF-8 bytes."""
    text = json.dumps(good_dict())
    assert TokenUpdate.decode(text) == TokenUpdate.decode(text.encode())


def test_decoded_fields_have_their_types() -> None:
    """Decoding yields enums for kind and source and the exact numbers sent."""
    update = TokenUpdate.decode(json.dumps(good_dict()))
    assert update.kind is TokenKind.ACCESS_TOKEN
    assert update.source is TokenSource.REFRESH
    assert update.version == 42
    assert update.expires_at == T0 + 7200


def test_kind_and_reason_are_optional() -> None:
    """An update without kind or reason defaults to an access token with no reason."""
    update = TokenUpdate.decode(json.dumps(without("kind", "reason")))
    assert update.kind is TokenKind.ACCESS_TOKEN
    assert update.reason is None


@pytest.mark.parametrize("length", [1, MAX_TOKEN_CHARS])
def test_token_lengths_within_limits_are_accepted(length: int) -> None:
    """Tokens of 1 and of 512 characters decode."""
    value = "T" * length
    assert TokenUpdate.decode(json.dumps(good_dict(value=value))).value == value


def test_lifetime_of_exactly_one_day_is_accepted() -> None:
    """A lifetime of exactly MAX_LIFETIME_S is still sane."""
    raw = json.dumps(good_dict(expires_at=T0 + MAX_LIFETIME_S))
    assert TokenUpdate.decode(raw).expires_at == T0 + MAX_LIFETIME_S


def test_largest_exact_version_is_accepted() -> None:
    """Version 2**53 - 1 still decodes (the largest exact double)."""
    assert TokenUpdate.decode(json.dumps(good_dict(version=2**53 - 1))).version == 2**53 - 1


# ------------------------------------------------------------------ bad input
BAD_INPUTS: dict[str, bytes | str] = {
    "not json": b"this is not json " + TOKEN.encode(),
    "truncated json": json.dumps(good_dict())[:-5],
    "json array": json.dumps([good_dict()]),
    "json string": json.dumps(TOKEN),
    "json number": b"42",
    "json null": b"null",
    "empty": b"",
    "missing app_id": json.dumps(without("app_id")),
    "missing value": json.dumps(without("value")),
    "missing expires_at": json.dumps(without("expires_at")),
    "missing issued_at": json.dumps(without("issued_at")),
    "missing version": json.dumps(without("version")),
    "missing source": json.dumps(without("source")),
    "missing producer_id": json.dumps(without("producer_id")),
    "string version": json.dumps(good_dict(version="42")),
    "float version": json.dumps(good_dict(version=42.0)),
    "bool version": json.dumps(good_dict(version=True)),
    "bool expires_at": json.dumps(good_dict(expires_at=True)),
    "string expires_at": json.dumps(good_dict(expires_at=str(T0 + 7200))),
    "string issued_at": json.dumps(good_dict(issued_at=str(T0))),
    "list value": json.dumps(good_dict(value=[TOKEN])),
    "object value": json.dumps(good_dict(value={"v": TOKEN})),
    "number value": json.dumps(good_dict(value=12345)),
    "unknown kind": json.dumps(good_dict(kind="refresh_token")),
    "unknown source": json.dumps(good_dict(source="magic")),
    "unknown field": json.dumps(good_dict(extra_field=1)),
    "bad app_id": json.dumps(good_dict(app_id="wx app/1")),
    "empty app_id": json.dumps(good_dict(app_id="")),
    "empty producer_id": json.dumps(good_dict(producer_id="")),
    "long reason": json.dumps(good_dict(reason="r" * 257)),
    "empty token": json.dumps(good_dict(value="")),
    "whitespace token": json.dumps(good_dict(value="   ")),
    "token with inner space": json.dumps(good_dict(value=TOKEN[:10] + " " + TOKEN[10:])),
    "token with leading space": json.dumps(good_dict(value=" " + TOKEN)),
    "token with trailing newline": json.dumps(good_dict(value=TOKEN + "\n")),
    "token with tab": json.dumps(good_dict(value=TOKEN[:10] + "\t" + TOKEN[10:])),
    "token with control char": json.dumps(good_dict(value=TOKEN + "\x00")),
    "token with no-break space": json.dumps(good_dict(value=TOKEN[:10] + "\u00a0" + TOKEN[10:])),
    "513-char token": json.dumps(good_dict(value=TOKEN + "T" * (MAX_TOKEN_CHARS + 1 - len(TOKEN)))),
    "expires_at equals issued_at": json.dumps(good_dict(expires_at=T0)),
    "expires_at before issued_at": json.dumps(good_dict(expires_at=T0 - 1)),
    "lifetime over a day": json.dumps(good_dict(expires_at=T0 + MAX_LIFETIME_S + 1)),
    "zero issued_at": json.dumps(good_dict(issued_at=0, expires_at=100)),
    "negative issued_at": json.dumps(good_dict(issued_at=-100, expires_at=100)),
    "version 0": json.dumps(good_dict(version=0)),
    "negative version": json.dumps(good_dict(version=-1)),
    "version 2**53": json.dumps(good_dict(version=2**53)),
    "huge version": json.dumps(good_dict(version=10**30)),
    "NaN expires_at": json.dumps(good_dict(expires_at=math.nan)),
    "Infinity expires_at": json.dumps(good_dict(expires_at=math.inf)),
    "-Infinity issued_at": json.dumps(good_dict(issued_at=-math.inf)),
    "NaN issued_at": json.dumps(good_dict(issued_at=math.nan)),
    "overflowing number": json.dumps(good_dict()).replace(str(T0 + 7200), "1e400"),
    "invalid utf-8": json.dumps(good_dict()).encode().replace(b"prod-1", b"prod-\xff\xfe"),
    "invalid utf-8 in token": json.dumps(good_dict()).encode().replace(b"SECRET", b"\xc3\x28"),
    "lone surrogate escape in token": json.dumps(good_dict(value=TOKEN + "\ud800")),
    "lone surrogate in text": json.dumps(good_dict(), ensure_ascii=False) + "\ud800",
    "deeply nested": "[" * 5000 + "]" * 5000,
    "over 64 KiB": json.dumps(good_dict(reason=None, padding="x" * MAX_ENCODED_BYTES)),
}


@pytest.mark.parametrize("raw", BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_bad_input_raises_invalid_update_without_the_token(raw: bytes | str) -> None:
    """Every malformed update raises `InvalidUpdate` whose message does not hold the token."""
    error = decode_error(raw)
    message = str(error)
    assert message
    assert TOKEN not in message
    assert TOKEN not in repr(error)
    assert "\n" not in message


def test_non_bytes_input_is_invalid_update() -> None:
    """Something that is neither bytes nor str is refused as `InvalidUpdate`."""
    error = decode_error(12345)  # type: ignore[arg-type]
    assert "int" in str(error)


def test_oversized_message_is_refused_before_parsing() -> None:
    """A message over 64 KiB is refused by size, naming the limit."""
    raw = b" " * (MAX_ENCODED_BYTES + 1)
    assert str(MAX_ENCODED_BYTES) in str(decode_error(raw))


def test_message_names_the_bad_field() -> None:
    """The error says which field is wrong, so an operator can fix the sender."""
    assert "version" in str(decode_error(json.dumps(good_dict(version=0))))
    assert "expires_at" in str(decode_error(json.dumps(good_dict(expires_at=True))))


def test_long_unknown_field_name_is_not_echoed() -> None:
    """An unknown field named by a long string (maybe a token used as a key) is shown cut short."""
    long_name = TOKEN + "K" * (140 - len(TOKEN))
    message = str(decode_error(json.dumps(good_dict(**{long_name: 1, "extra_field": 2}))))
    assert long_name not in message
    assert TOKEN not in message
    assert "extra_field" in message


def test_constructor_rejects_a_short_lifetime_too() -> None:
    """Building a model directly applies the same lifetime check as decoding."""
    with pytest.raises(ValueError, match="after issued_at"):
        make_update(lifetime_s=0)


# ------------------------------------------------------------------ masking
@given(st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=1, max_size=MAX_TOKEN_CHARS))
def test_mask_never_shows_more_than_eight_token_characters(value: str) -> None:
    """`mask()` shows at most 8 characters of a token, and none of a short one."""
    masked = mask(value)
    shown = sum(1 for c in masked if c.isupper())
    assert shown <= 8
    if len(value) <= 12:
        assert shown == 0
    assert value not in masked


@pytest.mark.parametrize("value", ["A", "ABCDEFGHIJKL", "ABCDEFGHIJKLM", TOKEN, "Z" * 512])
def test_mask_never_contains_the_whole_token(value: str) -> None:
    """A masked token never contains the token itself."""
    assert value not in mask(value)


def test_mask_tells_tokens_apart_by_their_ends() -> None:
    """Two long tokens with different ends mask differently."""
    assert mask("AAAA" + "x" * 20 + "1111") != mask("AAAA" + "x" * 20 + "2222")


def test_repr_and_str_hide_the_token() -> None:
    """`repr()`, `str()`, `format()` and `masked` of an update never contain the value."""
    update = make_update(value=TOKEN)
    for shown in (repr(update), str(update), f"{update}", update.masked):
        assert TOKEN not in shown
    assert "wxapp1" in str(update)
    assert "v1" in str(update)


def test_public_dict_masks_unless_revealed() -> None:
    """`public_dict()` masks the value; `reveal=True` shows it."""
    update = make_update(value=TOKEN)
    assert TOKEN not in json.dumps(update.public_dict())
    assert update.public_dict(reveal=True)["value"] == TOKEN


def test_validity_ends_at_expires_at() -> None:
    """`is_valid_at` is true before `expires_at` and false from it on."""
    update = make_update(lifetime_s=30)
    assert update.is_valid_at(T0 + 29.999)
    assert not update.is_valid_at(T0 + 30)
    assert update.seconds_left(T0 + 10) == 20


# ------------------------------------------------------------------ property tests
def assert_sane(update: TokenUpdate) -> None:
    """The invariants every decoded update holds."""
    assert 0 < update.version < 2**53
    assert 0 < update.issued_at < update.expires_at <= update.issued_at + MAX_LIFETIME_S
    assert 1 <= len(update.value) <= MAX_TOKEN_CHARS
    assert update.value.isprintable()
    assert " " not in update.value
    assert TokenUpdate.decode(update.encode()) == update


@given(st.binary(max_size=2048))
def test_decode_of_arbitrary_bytes_raises_only_invalid_update(raw: bytes) -> None:
    """Random bytes either decode to a sane update or raise `InvalidUpdate`."""
    try:
        update = TokenUpdate.decode(raw)
    except InvalidUpdate:
        return
    assert_sane(update)


@example("\ud800")
@example('{"app_id": "\udfff"}')
@given(st.text(st.characters(exclude_categories=()), max_size=512))
def test_decode_of_arbitrary_text_raises_only_invalid_update(raw: str) -> None:
    """Random text either decodes to a sane update or raises `InvalidUpdate`."""
    try:
        update = TokenUpdate.decode(raw)
    except InvalidUpdate:
        return
    assert_sane(update)


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)

VALID_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "app_id": st.from_regex(r"[A-Za-z0-9_.-]{1,64}", fullmatch=True),
    "kind": st.sampled_from(["access_token", "jsapi_ticket"]),
    "value": st.from_regex(r"[!-~]{1,520}", fullmatch=True),
    "version": st.integers(min_value=-3, max_value=2**54),
    "source": st.sampled_from(["refresh", "override"]),
    "producer_id": st.text(max_size=130),
    "reason": st.none() | st.text(max_size=260),
}


@st.composite
def update_dicts(draw: st.DrawFn) -> dict[str, Any]:
    """Dicts of real field names, mostly with plausible values, some wrong, plus strangers."""
    data: dict[str, Any] = {}
    for name in FIELDS:
        roll = draw(st.integers(0, 19))
        if roll == 0:
            continue  # field missing
        if roll == 1 or name not in VALID_VALUES:
            data[name] = draw(JSON_VALUES)
        else:
            data[name] = draw(VALID_VALUES[name])
    if draw(st.integers(0, 9)) > 0:
        # A plausible lifetime (sometimes just out of range), so many examples are valid.
        issued = draw(st.floats(min_value=-1.0, max_value=3e9) | st.integers(-1, 3 * 10**9))
        data["issued_at"] = issued
        data["expires_at"] = issued + draw(
            st.floats(min_value=-5.0, max_value=MAX_LIFETIME_S + 5, allow_nan=False)
        )
    if draw(st.integers(0, 4)) == 0:
        data.update(
            draw(st.dictionaries(st.sampled_from(["extra", "Version", "value "]), JSON_VALUES))
        )
    return data


@given(update_dicts())
def test_decode_of_json_ish_dicts_raises_only_invalid_update(data: dict[str, Any]) -> None:
    """Dicts of right and wrong fields and types decode sanely or raise `InvalidUpdate`."""
    try:
        update = TokenUpdate.decode(json.dumps(data))
    except InvalidUpdate:
        return
    assert_sane(update)


@given(update_dicts(), st.from_regex(r"SECRET[A-Za-z0-9]{10,40}", fullmatch=True))
def test_decode_errors_never_echo_the_token(data: dict[str, Any], token: str) -> None:
    """Whatever else is wrong with an update, its error message never holds its token."""
    data["value"] = token
    message = ""
    try:
        TokenUpdate.decode(json.dumps(data))
    except InvalidUpdate as exc:
        message = str(exc)
    assert token not in message
