"""The registry's tables, in one SQLAlchemy Core `MetaData` (no ORM); Alembic's migrations in
`migrations/versions/` create exactly these.

    platform_callbacks    every push received (still encrypted), until the leader acted on it
    platform_tickets      one row per platform: its newest verify ticket, sealed
    platform_authorizers  one row per (platform, authorizer): state and sealed refresh token
    stored_apps           plain apps kept here instead of (or beside) the apps file, secret sealed

`ticket_place` and `token_place` name where a sealed value lives (its AES-GCM associated
data), so a value copied to another row does not open there.

Times are seconds: `*_s` columns hold WeChat's clock (`create_time_s`) or ours. A sealed
value (see `sealing.py`) is stored as its ciphertext plus the id of the key that sealed it.
"""

from __future__ import annotations

from typing import Final, Literal

import sqlalchemy as sa

from producer.platform.sealing import place

#: Constraint names spelled out, so a migration can name what it changes on both dialects.
NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "pk": "pk_%(table_name)s",
}
metadata: Final = sa.MetaData(naming_convention=NAMING)

AuthorizerState = Literal["authorized", "needs_reauthorization", "unauthorized", "pending_code"]
AUTHORIZER_STATES: Final[tuple[AuthorizerState, ...]] = (
    "authorized",
    "needs_reauthorization",
    "unauthorized",
    "pending_code",
)

APPID = 64  # WeChat appids are 18 characters; room for the sandbox's and for growth
KEY_ID = 16  # sealing.key_id: 16 hex digits

callbacks: Final = sa.Table(
    "platform_callbacks",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
    sa.Column("component_appid", sa.String(APPID), nullable=False),
    #: sha1 hex of the Encrypt value: one push across WeChat's retries of it.
    sa.Column("push_id", sa.String(40), nullable=False),
    sa.Column("info_type", sa.String(32), nullable=False),
    sa.Column("raw_info_type", sa.String(64), nullable=False),
    sa.Column("authorizer_appid", sa.String(APPID), nullable=True),
    sa.Column("create_time_s", sa.BigInteger(), nullable=False),
    sa.Column("received_at_s", sa.Double(), nullable=False),
    #: The Encrypt value as pushed, still encrypted with the platform's EncodingAESKey.
    sa.Column("encrypt_b64", sa.Text(), nullable=False),
    sa.Column("processed_at_s", sa.Double(), nullable=True),
    sa.Column("outcome", sa.String(200), nullable=True),
    sa.UniqueConstraint("component_appid", "push_id"),
    sa.Index(None, "processed_at_s", "id"),
)

tickets: Final = sa.Table(
    "platform_tickets",
    metadata,
    sa.Column("component_appid", sa.String(APPID), primary_key=True),
    sa.Column("ticket_sealed", sa.LargeBinary(), nullable=False),
    sa.Column("ticket_key_id", sa.String(KEY_ID), nullable=False),
    sa.Column("create_time_s", sa.BigInteger(), nullable=False),
    sa.Column("received_at_s", sa.Double(), nullable=False),
)

authorizers: Final = sa.Table(
    "platform_authorizers",
    metadata,
    sa.Column("component_appid", sa.String(APPID), primary_key=True),
    sa.Column("authorizer_appid", sa.String(APPID), primary_key=True),
    sa.Column("state", sa.String(32), nullable=False),
    #: NULL until a code is redeemed, and again once unauthorized.
    sa.Column("refresh_token_sealed", sa.LargeBinary(), nullable=True),
    sa.Column("refresh_token_key_id", sa.String(KEY_ID), nullable=True),
    #: Goes up with every write of the refresh token: the compare-and-set's guard.
    sa.Column("refresh_token_version", sa.BigInteger(), nullable=False),
    sa.Column("reason", sa.String(200), nullable=True),
    sa.Column("auth_time_s", sa.BigInteger(), nullable=True),
    sa.Column("updated_at_s", sa.Double(), nullable=False),
    sa.CheckConstraint(
        "state IN ('authorized', 'needs_reauthorization', 'unauthorized', 'pending_code')",
        name="state",
    ),
    sa.Index(None, "component_appid", "state"),
    #: "Which platforms serve this account?" (a service asking by authorizer appid alone).
    sa.Index(None, "authorizer_appid"),
)


stored_apps: Final = sa.Table(
    "stored_apps",
    metadata,
    sa.Column("app_id", sa.String(APPID), primary_key=True),
    #: The app's configuration but its id and secret, as `AppConfig` dumps it (JSON).
    sa.Column("config_json", sa.Text(), nullable=False),
    sa.Column("secret_sealed", sa.LargeBinary(), nullable=False),
    sa.Column("secret_key_id", sa.String(KEY_ID), nullable=False),
    sa.Column("updated_at_s", sa.Double(), nullable=False),
)


def app_secret_place(app_id: str) -> bytes:
    """Where a stored app's secret is sealed (its associated data)."""
    return place("stored_apps", "secret_sealed", app_id)


def ticket_place(component_appid: str) -> bytes:
    """Where a platform's verify ticket is sealed (its associated data)."""
    return place("platform_tickets", "ticket_sealed", component_appid)


def token_place(component_appid: str, authorizer_appid: str) -> bytes:
    """Where an authorizer's refresh token is sealed (its associated data)."""
    return place("platform_authorizers", "refresh_token_sealed", component_appid, authorizer_appid)
