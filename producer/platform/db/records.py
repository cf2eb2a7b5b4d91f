"""What the registry's reads return: plain frozen records, secrets left out (but the verify
ticket, which `verify_ticket()` is asked for)."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from producer.platform.db.schema import AuthorizerState, authorizers


@dataclass(frozen=True, slots=True)
class StoredCallback:
    """One row of the callback log (the push itself still encrypted in `encrypt_b64`)."""

    id: int
    component_appid: str
    push_id: str
    info_type: str
    raw_info_type: str
    authorizer_appid: str | None
    create_time_s: int
    received_at_s: float
    encrypt_b64: str
    processed_at_s: float | None
    outcome: str | None


@dataclass(frozen=True, slots=True)
class VerifyTicket:
    ticket: str
    #: WeChat's CreateTime of the newest push that carried it.
    create_time_s: int
    #: Our clock when that push was stored.
    received_at_s: float
    #: Seconds since `received_at_s`, by the registry's clock.
    age_s: float


@dataclass(frozen=True, slots=True)
class Authorizer:
    """An authorizer's row without its refresh token (`refresh_token()` opens that)."""

    component_appid: str
    authorizer_appid: str
    state: AuthorizerState
    refresh_token_version: int
    has_refresh_token: bool
    reason: str | None
    auth_time_s: int | None
    updated_at_s: float


LISTED = (
    authorizers.c.component_appid,
    authorizers.c.authorizer_appid,
    authorizers.c.state,
    authorizers.c.refresh_token_version,
    authorizers.c.refresh_token_sealed.is_not(None).label("has_refresh_token"),
    authorizers.c.reason,
    authorizers.c.auth_time_s,
    authorizers.c.updated_at_s,
)


def authorizer_of(row: sa.Row[tuple[object, ...]]) -> Authorizer:
    values = dict(row._mapping)
    values["has_refresh_token"] = bool(values["has_refresh_token"])
    values["refresh_token_version"] = int(values["refresh_token_version"])
    return Authorizer(**values)
