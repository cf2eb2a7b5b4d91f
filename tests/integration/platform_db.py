"""Private databases on the local PostgreSQL and MariaDB for the platform registry's tests.

Each `private_database(kind)` CREATEs a database with a random name and DROPs it at the end;
no test touches a database it did not create. The servers are found through
`WXTOKEN_TEST_PG_URL` / `WXTOKEN_TEST_MYSQL_URL` (an administrative login: trust or root).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

import sqlalchemy as sa

from tests.conftest import require_service

ADMIN_URLS = {
    "postgresql": os.environ.get(
        "WXTOKEN_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    ),
    "mariadb": os.environ.get(
        "WXTOKEN_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/mysql"
    ),
}
KINDS = tuple(ADMIN_URLS)


@contextlib.contextmanager
def private_database(kind: str) -> Iterator[sa.URL]:
    """The URL of a new, empty database on `kind`'s server, dropped afterwards."""
    admin_url = sa.make_url(ADMIN_URLS[kind])
    require_service(kind, admin_url.render_as_string(hide_password=False))
    name = f"wxtest_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    with admin.connect() as connection:
        connection.execute(sa.text(f"CREATE DATABASE {name}"))
    try:
        yield admin_url.set(database=name)
    finally:
        drop = f"DROP DATABASE IF EXISTS {name}"
        if kind == "postgresql":
            drop += " WITH (FORCE)"  # connections a failed test left open
        with admin.connect() as connection:
            connection.execute(sa.text(drop))
        admin.dispose()
