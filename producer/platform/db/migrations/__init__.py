"""The registry's schema versions (Alembic), shipped in the package and run from code.

`migrate(url)` brings a database to the newest revision this release knows (the producer
calls it at start; run by several producers at once, they take turns on a database lock);
`check(url)` only reads the revision, and both refuse, as a `ConfigError`, a database at a
revision this release does not know (a newer release migrated it, or it is another
application's). Alembic's own bookkeeping lives in the table `platform_schema_version`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from consumer_lib.errors import ConfigError
from producer.platform.db.database import create_engine, redacted, translated

VERSION_TABLE = "platform_schema_version"
_HERE = Path(__file__).resolve().parent
_LOCK_NAME = "wxtoken_platform_migrate"
_LOCK_WAIT_S = 60
#: A migration's statements (and the wait for the lock) may take this long.
MIGRATION_TIMEOUT_S = 300


def _config(connection: sa.Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(_HERE).replace("%", "%%"))
    config.attributes["connection"] = connection
    return config


def head() -> str:
    """The newest revision this release ships."""
    revision = ScriptDirectory.from_config(_config()).get_current_head()
    assert revision is not None
    return revision


def known_revisions() -> set[str]:
    return {script.revision for script in ScriptDirectory.from_config(_config()).walk_revisions()}


def _engine_of(target: sa.Engine | sa.URL | str) -> tuple[sa.Engine, bool]:
    if isinstance(target, sa.Engine):
        return target, False
    return create_engine(target), True


def _current(connection: sa.Connection) -> str | None:
    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    heads = context.get_current_heads()
    if len(heads) > 1:
        raise ConfigError(f"the platform database has several schema heads: {sorted(heads)}")
    return heads[0] if heads else None


def _refuse_unknown(current: str | None, where: str) -> None:
    if current is not None and current not in known_revisions():
        raise ConfigError(
            f"the platform database {where} is at schema revision {current!r}, which this "
            f"release does not know (its newest is {head()!r}): a newer wxtoken migrated it, "
            "or it belongs to something else; refusing to use it"
        )


def check(target: sa.Engine | sa.URL | str) -> str | None:
    """The database's schema revision (None before the first migration); `ConfigError` if
    this release does not know it, `RegistryUnavailable` if the database does not answer."""
    engine, owned = _engine_of(target)
    try:
        with translated("reading the schema revision"), engine.connect() as connection:
            current = _current(connection)
        _refuse_unknown(current, redacted(engine.url))
        return current
    finally:
        if owned:
            engine.dispose()


def migrate(target: sa.Engine | sa.URL | str) -> str:
    """Bring the database to `head()` (nothing to do if it is there); returns the revision.
    Runs on its own connection whose statements may take `MIGRATION_TIMEOUT_S` (DDL on a big
    table, waiting for another producer's migration), not the registry's few seconds."""
    given = target.url if isinstance(target, sa.Engine) else target
    engine = create_engine(given, statement_timeout_s=MIGRATION_TIMEOUT_S)
    try:
        with (
            translated("migrating the platform database"),
            engine.connect() as connection,
            _migration_lock(connection),
        ):
            _refuse_unknown(_current(connection), redacted(engine.url))
            command.upgrade(_config(connection), "head")
            connection.commit()
            current = _current(connection)
        assert current is not None
        return current
    finally:
        engine.dispose()


@contextlib.contextmanager
def _migration_lock(connection: sa.Connection) -> Iterator[None]:
    """One migrating producer at a time: a session lock on the database (PostgreSQL advisory
    lock, MySQL's GET_LOCK), waited for up to `_LOCK_WAIT_S`; SQLite has one writer anyway."""
    backend = connection.engine.url.get_backend_name()
    if backend == "postgresql":
        connection.execute(sa.text("SELECT pg_advisory_lock(hashtext(:n))"), {"n": _LOCK_NAME})
        connection.commit()
        try:
            yield
        finally:
            connection.rollback()
            unlock = sa.text("SELECT pg_advisory_unlock(hashtext(:n))")
            connection.execute(unlock, {"n": _LOCK_NAME})
            connection.commit()
    elif backend == "mysql":
        # MySQL's named locks are server-wide: the name carries the database's.
        name = f"{_LOCK_NAME}.{connection.engine.url.database}"[:64]
        got = connection.execute(
            sa.text("SELECT GET_LOCK(:n, :s)"), {"n": name, "s": _LOCK_WAIT_S}
        ).scalar()
        connection.commit()
        if got != 1:
            raise ConfigError(f"another producer held the migration lock for {_LOCK_WAIT_S} s")
        try:
            yield
        finally:
            connection.rollback()
            connection.execute(sa.text("SELECT RELEASE_LOCK(:n)"), {"n": name})
            connection.commit()
    else:
        yield
