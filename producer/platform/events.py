"""What one verified, decrypted push to the authorization-event URL says.

WeChat pushes, encrypted, `component_verify_ticket` every 10 minutes and the authorization
events `authorized`, `updateauthorized` and `unauthorized`. The receiver turns each into a
`PlatformEvent`; the registry stores it (before `success` is answered) and the leader acts on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

InfoType = Literal[
    "component_verify_ticket", "authorized", "updateauthorized", "unauthorized", "other"
]


@dataclass(frozen=True, slots=True)
class PlatformEvent:
    """One push, as WeChat sent it (the decrypted XML's fields) and as we received it."""

    #: The platform (third-party platform's component appid) the push was for.
    component_appid: str
    #: `InfoType` of the decrypted XML; anything else is kept as "other" with `raw_info_type`.
    info_type: InfoType
    raw_info_type: str
    #: The XML's CreateTime (WeChat's clock, seconds).
    create_time_s: int
    #: Our clock when the push was verified (seconds).
    received_at_s: float
    #: Identifies one push across WeChat's retries of it: sha1 hex of the Encrypt value.
    push_id: str
    #: component_verify_ticket only.
    verify_ticket: str | None = None
    #: authorized / updateauthorized / unauthorized.
    authorizer_appid: str | None = None
    #: authorized / updateauthorized: redeem with api_query_auth before it expires.
    authorization_code: str | None = None
    authorization_code_expires_at_s: int | None = None
    pre_auth_code: str | None = None
