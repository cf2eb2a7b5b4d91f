"""Plain apps kept in the database (`wxtoken apps import/add/remove/list`), secrets sealed.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "stored_apps",
        sa.Column("app_id", sa.String(64), nullable=False),
        sa.Column("config_json", sa.Text(), nullable=False),
        sa.Column("secret_sealed", sa.LargeBinary(), nullable=False),
        sa.Column("secret_key_id", sa.String(16), nullable=False),
        sa.Column("updated_at_s", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("app_id", name="pk_stored_apps"),
    )


def downgrade() -> None:
    op.drop_table("stored_apps")
