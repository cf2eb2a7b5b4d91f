"""The platform database's URL and the producer's start with a platform configured."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from consumer_lib.errors import ConfigError
from producer.__main__ import main
from producer.platform.db.database import database_url, redacted
from producer.platform.db.rotation import main as rotation_main


@pytest.mark.parametrize(
    "url", ["postgresql+psycopg://u:pw@db:5432/wx", "mysql+pymysql://u:pw@db/wx"]
)
def test_the_two_tested_dialects_are_accepted_and_shown_without_password(url: str) -> None:
    """PostgreSQL through psycopg 3 and MySQL/MariaDB through PyMySQL; redacted hides pw."""
    parsed = database_url(url)
    assert "pw" not in redacted(parsed)
    assert "***" in redacted(parsed)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sqlite:///x.db", "use one of postgresql\\+psycopg, mysql\\+pymysql"),
        ("postgresql://u:hunter2@db/wx", "postgresql"),
        ("mysql+mysqldb://u:hunter2@db/wx", "mysqldb"),
        ("postgresql+psycopg://u:hunter2@db", "must name a host and a database"),
        ("not a url", "not a database URL"),
    ],
)
def test_other_urls_are_refused_without_showing_the_password(url: str, message: str) -> None:
    """Another dialect or driver, no database, garbage: a ConfigError, password hidden."""
    with pytest.raises(ConfigError, match=message) as caught:
        database_url(url)
    assert "hunter2" not in str(caught.value)


def _apps_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # main() would configure process-wide logging (pika silenced) for the tests after us.
    monkeypatch.setattr("producer.__main__.configure_logging", lambda level: None)
    apps = tmp_path / "apps.toml"
    apps.write_text('[[apps]]\napp_id = "wx0000000000000001"\nsecret_env = "WX_SECRET_1"\n')
    monkeypatch.setenv("WX_SECRET_1", "s")
    monkeypatch.setenv("WXTOKEN_APPS_FILE", str(apps))


def test_the_producer_refuses_to_start_on_a_bad_platform_url(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """WXTOKEN_PLATFORM_DB_URL with another dialect: exit 2, one line, no password."""
    _apps_file(monkeypatch, tmp_path)
    monkeypatch.setenv("WXTOKEN_PLATFORM_DB_URL", "sqlite://u:hunter2@/x.db")
    assert main([]) == 2
    err = capsys.readouterr().err
    assert "WXTOKEN_PLATFORM_DB_URL" in err
    assert "hunter2" not in err


def test_the_producer_wants_the_key_file_with_the_database(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A database URL without WXTOKEN_PLATFORM_KEY_FILE: exit 2 naming the missing setting,
    before any connection is tried."""
    _apps_file(monkeypatch, tmp_path)
    monkeypatch.setenv("WXTOKEN_PLATFORM_DB_URL", "postgresql+psycopg://u:pw@127.0.0.1:1/wx")
    assert main([]) == 2
    assert "WXTOKEN_PLATFORM_KEY_FILE must be set" in capsys.readouterr().err


def test_rotation_from_a_shell_refuses_missing_settings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No URL, or no key file: exit 2 with one line naming the variable, nothing touched."""
    assert rotation_main({}) == 2
    assert "WXTOKEN_PLATFORM_DB_URL" in capsys.readouterr().err
    url = "postgresql+psycopg://u:hunter2@127.0.0.1:1/wx"
    assert rotation_main({"WXTOKEN_PLATFORM_DB_URL": url}) == 2
    err = capsys.readouterr().err
    assert "WXTOKEN_PLATFORM_KEY_FILE must be set" in err
    assert "hunter2" not in err


def test_the_producer_without_the_platform_extra_says_so(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A database URL on an install without SQLAlchemy (the image's extras): exit 2 naming
    the extra to install, not a traceback."""
    _apps_file(monkeypatch, tmp_path)
    monkeypatch.setenv("WXTOKEN_PLATFORM_DB_URL", "postgresql+psycopg://u@127.0.0.1:1/wx")
    monkeypatch.setitem(sys.modules, "producer.platform.db.startup", None)  # import fails
    assert main([]) == 2
    assert "needs the platform extra (wxtoken[platform])" in capsys.readouterr().err
