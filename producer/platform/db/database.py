"""The platform database: its URL, an engine that fails fast, and the one place where
SQLAlchemy's and the drivers' exceptions become `RegistryUnavailable`.

`WXTOKEN_PLATFORM_DB_URL` names PostgreSQL through psycopg 3 (`postgresql+psycopg://...`) or
MySQL/MariaDB through PyMySQL (`mysql+pymysql://...`); any other dialect is refused. The URL
is only ever shown with its password hidden.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy import exc as sa_exc

from consumer_lib.errors import ConfigError
from producer.platform.db._deadlines import socket_deadline
from producer.platform.errors import RegistryUnavailable

SETTING = "WXTOKEN_PLATFORM_DB_URL"
#: The dialects we test against, with their driver.
DRIVERS: Final = ("postgresql+psycopg", "mysql+pymysql")
#: A dead database is noticed within these (connecting; one statement, lock waits included).
CONNECT_TIMEOUT_S = 3
STATEMENT_TIMEOUT_S = 5


def database_url(raw: str) -> sa.URL:
    """The validated URL; `ConfigError` (the URL shown without its password) if not usable."""
    try:
        url = sa.make_url(raw.strip())
    except (sa_exc.ArgumentError, ValueError):
        raise ConfigError(f"{SETTING}: not a database URL") from None
    shown = redacted(url)
    if url.drivername not in DRIVERS:
        raise ConfigError(
            f"{SETTING}: {shown} uses {url.drivername!r}; use one of {', '.join(DRIVERS)}"
        )
    if not url.host or not url.database:
        raise ConfigError(f"{SETTING}: {shown} must name a host and a database")
    return url


def redacted(url: sa.URL) -> str:
    """The URL as it may be logged: the password replaced by ***."""
    return url.render_as_string(hide_password=True)


def create_engine(
    url: sa.URL | str,
    *,
    connect_timeout_s: int = CONNECT_TIMEOUT_S,
    statement_timeout_s: int = STATEMENT_TIMEOUT_S,
) -> sa.Engine:
    """An engine whose connections give up quickly: a dead or stalled database costs a few
    seconds, never a hung thread. Parameters are never shown in its errors."""
    url = sa.make_url(url)
    connect_args: dict[str, Any] = {}
    if url.get_backend_name() == "postgresql":
        ms = statement_timeout_s * 1000
        connect_args = {
            "connect_timeout": max(2, connect_timeout_s),  # libpq's floor is 2 s
            "options": f"-c statement_timeout={ms} -c lock_timeout={ms}",
            # Unacknowledged bytes for this long (a link gone silent) close the connection.
            "tcp_user_timeout": ms,
            "application_name": "wxtoken",
        }
    elif url.get_backend_name() == "mysql":
        connect_args = {
            "connect_timeout": connect_timeout_s,
            "read_timeout": statement_timeout_s,
            "write_timeout": statement_timeout_s,
            "init_command": f"SET SESSION innodb_lock_wait_timeout = {statement_timeout_s}",
        }
    options: dict[str, Any] = {}
    if url.get_backend_name() != "sqlite":
        options = {"pool_size": 4, "max_overflow": 4, "pool_timeout": statement_timeout_s}
    # PostgreSQL: libpq has no read timeout, so a stalled link or a stopped server would
    # hang a ping forever; our own ping runs under a deadline instead (`_guarded_ping`).
    postgres = url.get_backend_name() == "postgresql"
    engine = sa.create_engine(
        url,
        connect_args=connect_args,
        pool_pre_ping=not postgres,
        hide_parameters=True,
        **options,
    )
    if postgres:
        event.listen(engine, "checkout", _guarded_ping(statement_timeout_s))
    return engine


def _guarded_ping(timeout_s: float) -> Any:
    """A pool checkout hook: `SELECT 1` under a deadline; a connection that fails it is
    replaced (SQLAlchemy's DisconnectionError), and a new one is bounded by connect_timeout."""

    def ping(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        del record, proxy
        try:
            with _socket_deadline(dbapi_connection, timeout_s):
                cursor = dbapi_connection.cursor()
                try:
                    cursor.execute("SELECT 1")
                finally:
                    cursor.close()
                dbapi_connection.rollback()
        except Exception as exc:
            raise sa_exc.DisconnectionError(f"ping failed: {type(exc).__name__}") from exc

    return ping


@contextlib.contextmanager
def deadline(connection: sa.Connection, timeout_s: float) -> Iterator[None]:
    """Break the connection's socket if the block outlives `timeout_s`, so a driver waiting
    on a stalled link fails (and the connection is discarded) instead of hanging."""
    with _socket_deadline(connection.connection.dbapi_connection, timeout_s):
        yield


@contextlib.contextmanager
def _socket_deadline(dbapi_connection: Any, timeout_s: float) -> Iterator[None]:
    fileno = getattr(dbapi_connection, "fileno", None)
    if fileno is None:  # PyMySQL and SQLite: their own timeouts apply
        yield
        return
    with socket_deadline(fileno(), timeout_s):
        yield


@contextlib.contextmanager
def translated(what: str) -> Iterator[None]:
    """Run a database step; any SQLAlchemy or driver failure leaves as `RegistryUnavailable`
    naming `what` and the driver's one-line reason (never the statement's parameters)."""
    try:
        yield
    except sa_exc.DBAPIError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if str(exc.orig).strip() else ""
        raise RegistryUnavailable(f"{what}: {type(exc.orig).__name__}: {reason}"[:300]) from exc
    except sa_exc.SQLAlchemyError as exc:
        raise RegistryUnavailable(f"{what}: {type(exc).__name__}: {exc}"[:300]) from exc
