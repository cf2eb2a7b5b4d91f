"""The registry: the callback log, the newest verify ticket, the authorizers.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "platform_callbacks",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
        sa.Column("component_appid", sa.String(64), nullable=False),
        sa.Column("push_id", sa.String(40), nullable=False),
        sa.Column("info_type", sa.String(32), nullable=False),
        sa.Column("raw_info_type", sa.String(64), nullable=False),
        sa.Column("authorizer_appid", sa.String(64), nullable=True),
        sa.Column("create_time_s", sa.BigInteger(), nullable=False),
        sa.Column("received_at_s", sa.Double(), nullable=False),
        sa.Column("encrypt_b64", sa.Text(), nullable=False),
        sa.Column("processed_at_s", sa.Double(), nullable=True),
        sa.Column("outcome", sa.String(200), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_platform_callbacks"),
        sa.UniqueConstraint(
            "component_appid", "push_id", name="uq_platform_callbacks_component_appid_push_id"
        ),
    )
    op.create_index(
        "ix_platform_callbacks_processed_at_s_id", "platform_callbacks", ["processed_at_s", "id"]
    )
    op.create_table(
        "platform_tickets",
        sa.Column("component_appid", sa.String(64), nullable=False),
        sa.Column("ticket_sealed", sa.LargeBinary(), nullable=False),
        sa.Column("ticket_key_id", sa.String(16), nullable=False),
        sa.Column("create_time_s", sa.BigInteger(), nullable=False),
        sa.Column("received_at_s", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("component_appid", name="pk_platform_tickets"),
    )
    op.create_table(
        "platform_authorizers",
        sa.Column("component_appid", sa.String(64), nullable=False),
        sa.Column("authorizer_appid", sa.String(64), nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("refresh_token_sealed", sa.LargeBinary(), nullable=True),
        sa.Column("refresh_token_key_id", sa.String(16), nullable=True),
        sa.Column("refresh_token_version", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.String(200), nullable=True),
        sa.Column("auth_time_s", sa.BigInteger(), nullable=True),
        sa.Column("updated_at_s", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint(
            "component_appid", "authorizer_appid", name="pk_platform_authorizers"
        ),
        sa.CheckConstraint(
            "state IN ('authorized', 'needs_reauthorization', 'unauthorized', 'pending_code')",
            name="ck_platform_authorizers_state",
        ),
    )
    op.create_index(
        "ix_platform_authorizers_component_appid_state",
        "platform_authorizers",
        ["component_appid", "state"],
    )
    op.create_index(
        "ix_platform_authorizers_authorizer_appid", "platform_authorizers", ["authorizer_appid"]
    )


def downgrade() -> None:
    op.drop_table("platform_authorizers")
    op.drop_table("platform_tickets")
    op.drop_table("platform_callbacks")
