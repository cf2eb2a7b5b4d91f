"""The third wire contract: an operator's signed control request, and the leader's answer.

`wxtoken quota clear APP_ID` and `wxtoken refresh APP_ID [--force]` publish a
`ControlRequest` on the requests exchange (the same one refresh requests use), with the
message `type` `CONTROL_MESSAGE_TYPE`. Since a
consumer credential may publish there too, a control request is always an Ed25519 envelope
(`signing.seal`) signed with the operator's key over `CONTROL_DOMAIN` + the payload (so
no signature made for anything else, an override's included, is one of a control
request), and the producers accept it only when the key is one of their control keys
(`WXTOKEN_CONTROL_KEYS`, a role of its own: not the keys trusted for overrides): there is
no insecure mode. Replays are refused twice over: `issued_at` must be within
`CONTROL_WINDOW_S` of the producer's clock, and the leader claims `request_id` once with
SET NX (`KeyLayout.control_seen`).

The leader answers with a `ControlAnswer` stored as JSON at `KeyLayout.control_answer`
(request id), expiring after `ANSWER_TTL_S`; the CLI waits for that key.
"""

from __future__ import annotations

import enum
import math
import secrets
from collections.abc import Mapping
from typing import Annotated

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from ..errors import InvalidUpdate
from .kinds import TokenKind
from .signing import seal, unseal
from .update import AppId, decode_json_model

#: The `type` property of a control message on the requests exchange.
CONTROL_MESSAGE_TYPE = "wxtoken.control_request.v1"
#: The domain tag signed before a control request's payload (`signing.seal(domain=)`).
CONTROL_DOMAIN = b"wxtoken control request\x00"
#: Anything bigger is refused before it is parsed.
MAX_CONTROL_BYTES = 4 * 1024
#: A request issued further than this from the producer's clock (either way) is refused.
CONTROL_WINDOW_S = 60.0
#: How long the leader remembers a request id: past it, the window refuses the request.
SEEN_TTL_S = int(2 * CONTROL_WINDOW_S + 60)
#: How long an answer waits in Redis for the CLI.
ANSWER_TTL_S = 300

RequestId = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")]
Text = Annotated[str, StringConstraints(max_length=256)]


def new_request_id() -> str:
    """32 random hex digits."""
    return secrets.token_hex(16)


def _positive_seconds(seconds: float) -> float:
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError("must be a positive number of UNIX seconds")
    return seconds


class ControlAction(enum.StrEnum):
    """What an operator may ask the leader to do."""

    #: POST /cgi-bin/clear_quota/v2 for the app: 10 a month, WeChat official accounts only.
    CLEAR_QUOTA = "clear_quota"
    #: Replace the credential if upstream refuses it (checked first), within the budgets.
    REFRESH = "refresh"
    #: Replace the credential even though upstream accepts it (a leaked token), within
    #: WeChat's and our budgets.
    FORCE_REFRESH = "force_refresh"


class ControlRequest(BaseModel):
    """An operator asks the leader to act on one app; valid only signed."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    action: ControlAction
    app_id: AppId
    request_id: RequestId
    #: Who asks, `ops:<user>@<host>`; recorded as `who` in the audit trail.
    operator: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    #: When the operator issued it, UNIX seconds.
    issued_at: float
    reason: Text | None = None
    #: Which credential a refresh is about (left out on the wire when the access token).
    kind: TokenKind = TokenKind.ACCESS_TOKEN
    #: The version the operator saw stored: a refresh finds it already replaced when the
    #: leader holds a newer one.
    seen_version: Annotated[int, Field(gt=0, lt=2**53)] | None = None

    _issued_at_is_positive = field_validator("issued_at")(_positive_seconds)

    def __str__(self) -> str:
        kind = "" if self.kind is TokenKind.ACCESS_TOKEN else f"/{self.kind}"
        return (
            f"{self.action} {self.app_id}{kind} (request {self.request_id[:8]}) by {self.operator}"
        )

    def seal(self, signer: Ed25519PrivateKey) -> bytes:
        """The signed envelope to publish (fields at their defaults are left out)."""
        return seal(
            signer, self.model_dump_json(exclude_defaults=True).encode(), domain=CONTROL_DOMAIN
        )

    @classmethod
    def open(cls, raw: bytes, keys: Mapping[str, Ed25519PublicKey]) -> tuple[ControlRequest, str]:
        """(request, key id) from a signed envelope; anything else raises `InvalidUpdate`."""
        if not isinstance(raw, bytes):
            raise InvalidUpdate("invalid control request: not bytes")
        if len(raw) > MAX_CONTROL_BYTES:
            raise InvalidUpdate(f"invalid control request: {len(raw)} bytes exceed limit")
        payload, signer_id = unseal(raw, keys, what="control request", domain=CONTROL_DOMAIN)
        request = decode_json_model(
            cls, payload, max_bytes=MAX_CONTROL_BYTES, what="control request"
        )
        return request, signer_id


class ControlResult(enum.StrEnum):
    """How the leader ended a request."""

    #: Upstream did it (clear_quota answered errcode 0; a refresh replaced the credential,
    #: `version` is the new one).
    DONE = "done"
    #: Upstream refused or failed; `errcode` and `message` say why.
    FAILED = "failed"
    #: The leader would not ask upstream (an unknown app, a WeCom app, too old a request).
    REFUSED = "refused"
    #: A refresh was not needed: upstream accepts the credential held (`version`).
    REFUTED = "refuted"
    #: A refresh was needed or forced but a budget (WeChat's or ours) is spent for now.
    OVER_BUDGET = "over_budget"


class ControlAnswer(BaseModel):
    """The leader's answer to one request, stored where the CLI waits for it."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    request_id: RequestId
    action: ControlAction
    app_id: AppId
    result: ControlResult
    errcode: Annotated[int, Field(ge=-(2**31), lt=2**31)] | None = None
    message: Text
    producer_id: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    answered_at: float
    #: A refresh's credential version: the new one (done), or the one kept.
    version: Annotated[int, Field(gt=0, lt=2**53)] | None = None

    _answered_at_is_positive = field_validator("answered_at")(_positive_seconds)

    def encode(self) -> bytes:
        """JSON; fields at their defaults (`errcode`, `version`) are left out, so a CLI that
        predates `version` still reads a quota clear's answer."""
        return self.model_dump_json(exclude_defaults=True).encode()

    @classmethod
    def decode(cls, raw: bytes | str) -> ControlAnswer:
        """Parse and validate; anything wrong raises `InvalidUpdate`."""
        return decode_json_model(cls, raw, max_bytes=MAX_CONTROL_BYTES, what="control answer")
