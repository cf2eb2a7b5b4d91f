"""Alembic's entry for the registry's migrations, run only through `migrate()`: the
connection comes in `config.attributes`, no alembic.ini, no offline SQL."""

from __future__ import annotations

from alembic import context

from producer.platform.db.migrations import VERSION_TABLE
from producer.platform.db.schema import metadata

if context.is_offline_mode():
    raise RuntimeError("the platform registry's migrations run online only, through migrate()")

context.configure(
    connection=context.config.attributes["connection"],
    target_metadata=metadata,
    version_table=VERSION_TABLE,
    transaction_per_migration=True,
)
with context.begin_transaction():
    context.run_migrations()
