"""`wxtoken-producer` with a platform database configured: it migrates the database at start
and serves tokens as before; a database at a revision it does not know stops it."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from producer.platform.db.migrations import VERSION_TABLE, check, head, migrate
from producer.platform.db.sealing import new_key_line
from tests.integration.platform_db import private_database
from tests.integration.stack import Stack
from tests.waiting import wait_for

pytestmark = pytest.mark.slow


def _key_file(tmp_path: Path) -> Path:
    path = tmp_path / "platform.keys"
    path.write_text(new_key_line() + "\n")
    return path


@pytest.mark.parametrize("kind", ["postgresql", "mariadb"])
def test_the_producer_migrates_the_platform_database_at_start(
    stack: Stack, tmp_path: Path, kind: str
) -> None:
    """An empty database reaches head while the producer stores its apps' tokens; the log
    names the database without its password."""
    with private_database(kind) as url:
        if kind == "postgresql":
            url = url.set(password="pw-not-for-logs")  # trust auth: accepted, ignored
        producer = stack.producer(
            WXTOKEN_PLATFORM_DB_URL=url.render_as_string(hide_password=False),
            WXTOKEN_PLATFORM_KEY_FILE=str(_key_file(tmp_path)),
        )
        for app_id in stack.app_ids:
            wait_for(lambda a=app_id: stack.snapshot(a), timeout_s=60, message=f"{app_id}")
        assert check(url) == head()
        producer.terminate()
        log = producer.stderr_text()
        assert f"at schema revision {head()}" in log, log
        assert "pw-not-for-logs" not in log


def test_the_producer_refuses_a_database_at_an_unknown_revision(
    stack: Stack, tmp_path: Path
) -> None:
    """A newer release's schema: exit 2 with one line naming the revision; the database and
    its revision are left alone."""
    with private_database("postgresql") as url:
        migrate(url)
        engine = sa.create_engine(url, poolclass=sa.NullPool)
        with engine.begin() as connection:
            bump = f"UPDATE {VERSION_TABLE} SET version_num = '0999'"  # noqa: S608 - ours
            connection.execute(sa.text(bump))
        producer = stack.producer(
            WXTOKEN_PLATFORM_DB_URL=url.render_as_string(hide_password=False),
            WXTOKEN_PLATFORM_KEY_FILE=str(_key_file(tmp_path)),
        )
        assert producer.proc.wait(60) == 2
        assert "schema revision '0999'" in producer.stderr_text()
        with engine.connect() as connection:
            read = f"SELECT version_num FROM {VERSION_TABLE}"  # noqa: S608 - a constant
            assert connection.execute(sa.text(read)).scalar_one() == "0999"
        engine.dispose()
