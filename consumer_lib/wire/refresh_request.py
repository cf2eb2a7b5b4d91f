"""The second wire contract: a request to refresh one app's token, sent to the producers.

A service whose WeChat call answered 40001/40014/42001 (`TokenClient.report_invalid`), or an
operator (`wxtoken refresh`), publishes a `RefreshRequest` on the requests exchange
(`requests_exchange(settings.exchange)`). The token itself never travels: only its SHA-256
(`fingerprint()`), enough for the leader to tell whether the reported token is still the
current one. Decoding failures of any kind become `InvalidUpdate` ("invalid refresh
request: ..."), exactly as `TokenUpdate.decode()` does for updates.
"""

from __future__ import annotations

import hashlib
import math
import re
from typing import Annotated

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
)

from .update import AppId, TokenKind, decode_json_model

#: Anything bigger on the wire is refused before it is parsed.
MAX_REQUEST_BYTES = 4 * 1024
#: The `type` property of a request message; names the contract and its version.
REQUEST_MESSAGE_TYPE = "wxtoken.refresh_request.v1"
#: A request left in a queue longer than this is useless: the broker drops it.
REQUEST_TTL_MS = 30_000

TokenSha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
#: What a `requester` may hold: it is logged by the producers, so no control characters, no
#: spaces, nothing that could start a forged log line.
REQUESTER_PATTERN = r"^[A-Za-z0-9_.:@+=/-]{1,128}$"
_REQUESTER_CHARS = re.compile(r"[^A-Za-z0-9_.:@+=/-]")
#: A `reason` is free text that is logged: anything but control characters (C0, DEL, C1,
#: the line and paragraph separators). The one pattern: the gateway's bodies use it too.
REASON_PATTERN = r"^[^\x00-\x1f\x7f-\x9f\u2028\u2029]*$"
REASON_MAX_CHARS = 256
ReasonText = Annotated[str, StringConstraints(max_length=REASON_MAX_CHARS, pattern=REASON_PATTERN)]


def safe_requester(text: str) -> str:
    """`text` with every character outside `REQUESTER_PATTERN`'s alphabet replaced by `_`,
    cut to 128: for building a requester from a host or user name."""
    return (_REQUESTER_CHARS.sub("_", text) or "_")[:128]


def fingerprint(token: str) -> str:
    """The SHA-256 of `token` as 64 lowercase hex digits: what a request carries instead."""
    return hashlib.sha256(token.encode()).hexdigest()


def requests_exchange(exchange: str) -> str:
    """The fanout exchange carrying requests, next to the token exchange `exchange`."""
    return f"{exchange}.requests"


class RefreshRequest(BaseModel):
    """Someone saw the token with this fingerprint refused by WeChat and asks for a new one."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    app_id: AppId
    kind: TokenKind = TokenKind.ACCESS_TOKEN
    #: SHA-256 of the reported token (see `fingerprint`); never the token itself.
    token_sha256: TokenSha256
    #: The version of the reported token, when the requester knows it.
    reported_version: Annotated[int, Field(gt=0, lt=2**53)] | None = None
    #: Who asks: `client:<host>-<pid>`, `ops:<user>@<host>`.
    requester: Annotated[str, StringConstraints(pattern=REQUESTER_PATTERN)]
    #: When the request was made, UNIX seconds.
    requested_at: float
    #: Why (free text, no control characters: `REASON_PATTERN`).
    reason: ReasonText | None = None

    @field_validator("requested_at")
    @classmethod
    def _timestamp_is_positive(cls, seconds: float) -> float:
        if not math.isfinite(seconds) or seconds <= 0:
            raise ValueError("must be a positive number of UNIX seconds")
        return seconds

    @classmethod
    def for_token(
        cls,
        app_id: str,
        token: str,
        *,
        requester: str,
        now_s: float,
        kind: TokenKind = TokenKind.ACCESS_TOKEN,
        reported_version: int | None = None,
        reason: str | None = None,
    ) -> RefreshRequest:
        """A request about `token` (only its fingerprint is kept); pydantic errors raise."""
        return cls(
            app_id=app_id,
            kind=kind,
            token_sha256=fingerprint(token),
            reported_version=reported_version,
            requester=requester,
            requested_at=now_s,
            reason=reason,
        )

    def is_about(self, token: str) -> bool:
        """True when `token` is the one this request reports."""
        return fingerprint(token) == self.token_sha256

    def __str__(self) -> str:
        version = f"v{self.reported_version}" if self.reported_version is not None else "v?"
        return (
            f"{self.app_id}/{self.kind} {version} sha256:{self.token_sha256[:12]} "
            f"from {self.requester}"
        )

    # ----------------------------------------------------------------- wire
    def encode(self) -> bytes:
        """Compact UTF-8 JSON, the form published."""
        return self.model_dump_json().encode()

    @classmethod
    def decode(cls, raw: bytes | str) -> RefreshRequest:
        """Parse and validate; anything wrong raises `InvalidUpdate` naming the problem."""
        return decode_json_model(cls, raw, max_bytes=MAX_REQUEST_BYTES, what="refresh request")
