"""The wire contract: one token update, as published on the exchange and stored in Redis.

Producer, ops CLI and subscribers all go through `TokenUpdate.encode()` and
`TokenUpdate.decode()`, so the three cannot drift apart. Decoding failures of any kind
become `InvalidUpdate`.
"""

from __future__ import annotations

import enum
from typing import Annotated, Any, Self, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from ..errors import InvalidUpdate

#: WeChat promises tokens of at most 512 characters.
MAX_TOKEN_CHARS = 512
#: Anything bigger on the wire is refused before it is parsed.
MAX_ENCODED_BYTES = 64 * 1024
#: Longest lifetime we believe; WeChat's is 7200 s, a tenth of a day more is absurd.
MAX_LIFETIME_S = 86_400.0

AppId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]


class TokenKind(enum.StrEnum):
    """What the value is; one version sequence per app and kind."""

    ACCESS_TOKEN = "access_token"
    JSAPI_TICKET = "jsapi_ticket"


class TokenSource(enum.StrEnum):
    """Who produced the value: the producer's scheduled refresh, or an operator."""

    REFRESH = "refresh"
    OVERRIDE = "override"


def mask(value: str) -> str:
    """Show enough of a token to tell two apart in a log, never enough to use it."""
    if len(value) <= 12:
        return "*" * len(value)
    return f"{value[:4]}…{value[-4:]} ({len(value)} chars)"


class TokenUpdate(BaseModel):
    """One token for one app and kind, with the version that orders it against others."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    app_id: AppId
    kind: TokenKind = TokenKind.ACCESS_TOKEN
    value: Annotated[str, Field(min_length=1, max_length=MAX_TOKEN_CHARS, repr=False)]
    #: Absolute expiry, UNIX seconds.
    expires_at: float
    #: When the producer (or operator) obtained the value, UNIX seconds.
    issued_at: float
    #: Strictly increasing per app and kind; the highest version wins everywhere.
    version: Annotated[int, Field(gt=0, lt=2**53)]  # exact in Lua and JSON doubles
    source: TokenSource
    producer_id: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    #: The leader lease term the producer held when it wrote this; None for overrides.
    epoch: Annotated[int, Field(gt=0, lt=2**53)] | None = None
    reason: Annotated[str, StringConstraints(max_length=256)] | None = None

    @field_validator("value")
    @classmethod
    def _value_is_a_token(cls, value: str) -> str:
        if value.strip() != value or not value.isprintable() or " " in value:
            raise ValueError("token must be printable with no whitespace")
        return value

    @field_validator("expires_at", "issued_at")
    @classmethod
    def _timestamps_are_positive(cls, seconds: float) -> float:
        if seconds <= 0:
            raise ValueError("must be a positive number of UNIX seconds")
        return seconds

    @model_validator(mode="after")
    def _lifetime_is_sane(self) -> Self:
        lifetime_s = self.expires_at - self.issued_at
        if lifetime_s <= 0:
            raise ValueError("expires_at must be after issued_at")
        if lifetime_s > MAX_LIFETIME_S:
            raise ValueError(f"lifetime of {lifetime_s:.0f} s is longer than a day")
        return self

    # ----------------------------------------------------------------- behaviour
    def seconds_left(self, now_s: float) -> float:
        """Seconds until expiry at `now_s` (negative once expired)."""
        return self.expires_at - now_s

    def is_valid_at(self, now_s: float) -> bool:
        """True while the token has not reached its `expires_at`."""
        return now_s < self.expires_at

    @property
    def masked(self) -> str:
        """The token as it may appear in logs and default CLI output."""
        return mask(self.value)

    def public_dict(self, *, reveal: bool = False) -> dict[str, Any]:
        """A JSON-able dict for display, the token masked unless `reveal`."""
        data = self.model_dump(mode="json")
        if not reveal:
            data["value"] = self.masked
        return data

    def __str__(self) -> str:
        return (
            f"{self.app_id}/{self.kind} v{self.version} {self.source} {self.masked} "
            f"expires_at={self.expires_at:.0f}"
        )

    # ----------------------------------------------------------------- wire
    def encode(self) -> bytes:
        """Compact UTF-8 JSON, the form published and stored."""
        return self.model_dump_json().encode()

    @classmethod
    def decode(cls, raw: bytes | str) -> TokenUpdate:
        """Parse and validate; anything wrong raises `InvalidUpdate` naming the problem."""
        return decode_json_model(cls, raw, max_bytes=MAX_ENCODED_BYTES, what="update")


ModelT = TypeVar("ModelT", bound=BaseModel)


def decode_json_model(
    model: type[ModelT], raw: bytes | str, *, max_bytes: int, what: str
) -> ModelT:
    """Strict JSON decoding of a wire model: every problem, from bytes that are not text to
    a bad field, is one `InvalidUpdate` line starting "invalid {what}: " that never echoes
    the input (it may hold a token)."""
    if isinstance(raw, str):
        try:
            raw = raw.encode()
        except UnicodeEncodeError:  # lone surrogates: not text any wire could carry
            raise InvalidUpdate(f"invalid {what}: not valid Unicode text") from None
    if not isinstance(raw, bytes):
        raise InvalidUpdate(f"invalid {what}: expected bytes, got {type(raw).__name__}")
    if len(raw) > max_bytes:
        raise InvalidUpdate(f"invalid {what}: {len(raw)} bytes exceed {max_bytes}")
    try:
        return model.model_validate_json(raw, strict=True)
    except ValidationError as exc:
        raise InvalidUpdate(_describe(exc, what)) from None


def _describe(exc: ValidationError, what: str) -> str:
    """One line naming each bad field, never echoing the input (it may hold a token)."""
    parts = []
    for error in exc.errors(include_input=False, include_url=False):
        # An unknown field's name is outside input too: cut it short, it may be a token.
        where = ".".join(_short(str(p)) for p in error["loc"]) or what
        parts.append(f"{where}: {error['msg']}")
    return f"invalid {what}: " + "; ".join(parts)


def _short(name: str, limit: int = 24) -> str:
    return name if len(name) <= limit else f"{name[:8]}…({len(name)} chars)"
