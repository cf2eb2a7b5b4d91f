"""`wxtoken apps` and `wxtoken platform` refuse bad input before touching the database: a
missing setting, an empty or multi-line secret, an unknown ticket, a bad apps file or an
unknown platform are one line on stderr and exit 2; no secret is ever echoed."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from ops.cli import main

#: A database nobody listens on: every case here must fail before connecting.
NOWHERE_DB = "postgresql+psycopg://nobody@127.0.0.1:1/nothing"


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("WXTOKEN_PLATFORM_DB_URL", "WXTOKEN_PLATFORMS_FILE", "WXTOKEN_PLATFORM_KEY_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no .env of the checkout
    return tmp_path


def run(args: list[str], stdin: str | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(main, args, input=stdin)
    return result.exit_code, result.output


@pytest.mark.parametrize(
    "args",
    [
        ["apps", "list"],
        ["apps", "remove", "wx1234567890abcdef"],
        ["platform", "status"],
        ["platform", "reconcile"],
    ],
)
def test_without_the_database_setting_they_say_so(env: Path, args: list[str]) -> None:
    code, out = run(args)
    assert code == 2
    assert "WXTOKEN_PLATFORM_DB_URL" in out


def test_platform_commands_want_the_platforms_file(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WXTOKEN_PLATFORM_DB_URL", NOWHERE_DB)
    code, out = run(["platform", "status"])
    assert code == 2
    assert "WXTOKEN_PLATFORMS_FILE" in out


@pytest.mark.parametrize(
    ("stdin", "extra", "said"),
    [
        ("", [], "give the app secret on standard input"),
        ("   \n", [], "give the app secret on standard input"),
        ("s" * 600, [], "give the app secret on standard input"),
        ("good-secret-0123456789\n", ["--tickets", "corp_jsapi"], "unknown ticket"),
        ("good-secret-0123456789\n", ["--token-api", "wecom"], "Invalid value for '--token-api'"),
    ],
)
def test_apps_add_refuses_a_bad_secret_or_option(
    env: Path, monkeypatch: pytest.MonkeyPatch, stdin: str, extra: list[str], said: str
) -> None:
    monkeypatch.setenv("WXTOKEN_PLATFORM_DB_URL", NOWHERE_DB)
    code, out = run(["apps", "add", "wx1234567890abcdef", *extra], stdin)
    assert code == 2
    assert said in out
    assert "good-secret" not in out


def test_apps_add_refuses_a_bad_app_id(env: Path) -> None:
    code, out = run(["apps", "add", "not an app id"], "secret\n")
    assert code == 2
    assert "APP_ID" in out or "app_id" in out


def test_apps_import_refuses_a_bad_file(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WXTOKEN_PLATFORM_DB_URL", NOWHERE_DB)
    bad = env / "apps.toml"
    bad.write_text('[[apps]]\napp_id = "wx1234567890abcdef"\nsecret_env = "NOT_SET_HERE"\n')
    code, out = run(["apps", "import", str(bad)])
    assert code == 2
    assert "NOT_SET_HERE" in out
    bad.write_text("not toml [")
    code, out = run(["apps", "import", str(bad)])
    assert code == 2
    assert "not valid TOML" in out


def test_platform_status_names_an_unknown_platform(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    platforms = env / "platforms.toml"
    platforms.write_text(
        '[[platforms]]\ncomponent_appid = "wxcomponent0000001"\nsecret_env = "S"\n'
        'token_env = "T"\nencoding_aes_key_env = "K"\n'
    )
    monkeypatch.setenv("WXTOKEN_PLATFORM_DB_URL", NOWHERE_DB)
    monkeypatch.setenv("WXTOKEN_PLATFORMS_FILE", str(platforms))
    monkeypatch.setenv("T", "pamtest")
    monkeypatch.setenv("K", "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG")
    code, out = run(["platform", "status", "wxcomponent0000009"])
    assert code == 2
    assert "not in the platforms file" in out
