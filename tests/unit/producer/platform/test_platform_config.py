"""The platforms file: values from env or files, the receiver never reading the secret, and
one-line errors that repeat no value."""

from __future__ import annotations

from pathlib import Path

import pytest

from consumer_lib import ConfigError
from producer.platform.config import load_platforms

APPID = "wx134c8103faa5a59e"
KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
ENV = {"P_SECRET": "component-secret-1", "P_TOKEN": "pamtest", "P_KEY": KEY}


def table(**fields: str) -> str:
    values = {
        "component_appid": APPID,
        "secret_env": "P_SECRET",
        "token_env": "P_TOKEN",
        "encoding_aes_key_env": "P_KEY",
        **fields,
    }
    lines = [f'{k} = "{v}"' for k, v in values.items() if v != "-"]
    return "[[platforms]]\n" + "\n".join(lines) + "\n\n"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "platforms.toml"
    path.write_text(text, encoding="utf-8")
    return path


def error(path: Path, environ: dict[str, str] | None = None, *, with_secret: bool = True) -> str:
    with pytest.raises(ConfigError) as info:
        load_platforms(path, environ=ENV if environ is None else environ, with_secret=with_secret)
    message = str(info.value)
    assert "\n" not in message
    for value in ENV.values():
        assert value not in message
    return message


def test_values_from_env(tmp_path: Path) -> None:
    """Each value comes from its variable; the repr shows none of them."""
    (platform,) = load_platforms(write(tmp_path, table()), environ=ENV)
    assert platform.component_appid == APPID
    assert platform.token.get_secret_value() == "pamtest"
    assert platform.encoding_aes_key.get_secret_value() == KEY
    assert platform.secret is not None
    assert platform.secret.get_secret_value() == "component-secret-1"
    assert KEY not in repr(platform)
    assert "component-secret-1" not in repr(platform)


def test_values_from_files_relative_to_the_file(tmp_path: Path) -> None:
    """A relative *_file is read from the platforms file's folder, stripped."""
    (tmp_path / "token").write_text("pamtest\n")
    (tmp_path / "key").write_text(KEY + "\n")
    (tmp_path / "secret").write_text("s3cret\n")
    text = table(
        secret_env="-",
        token_env="-",
        encoding_aes_key_env="-",
        secret_file="secret",
        token_file="token",
        encoding_aes_key_file="key",
    )
    (platform,) = load_platforms(write(tmp_path, text), environ={})
    assert platform.token.get_secret_value() == "pamtest"
    assert platform.encoding_aes_key.get_secret_value() == KEY


def test_the_receiver_never_reads_the_secret(tmp_path: Path) -> None:
    """Without the secret: its variable may be unset and its file unreadable; the entry must
    still name one."""
    path = write(tmp_path, table(secret_env="-", secret_file="/nonexistent/secret"))
    (platform,) = load_platforms(
        path, environ={"P_TOKEN": "pamtest", "P_KEY": KEY}, with_secret=False
    )
    assert platform.secret is None
    assert "exactly one of secret_env, secret_file" in error(
        write(tmp_path, table(secret_env="-")), with_secret=False
    )


@pytest.mark.parametrize(
    ("fields", "environ", "expected"),
    [
        ({"component_appid": "wx123"}, None, "component_appid"),
        ({"component_appid": "ab134c8103faa5a59e"}, None, "component_appid"),
        ({"token_file": "t"}, None, "exactly one of token_env, token_file"),
        ({"token_env": "-"}, None, "exactly one of token_env, token_file"),
        ({}, {"P_SECRET": "x", "P_TOKEN": "pamtest"}, "environment variable P_KEY is not set"),
        ({}, {**ENV, "P_TOKEN": "a b"}, "the token is empty or has whitespace inside"),
        ({}, {**ENV, "P_TOKEN": "ab"}, "the token is 3-32 letters and digits"),
        ({}, {**ENV, "P_TOKEN": "to-ken"}, "the token is 3-32 letters and digits"),
        (
            {},
            {**ENV, "P_KEY": KEY[:-1]},
            "EncodingAESKey is 43 characters of A-Z a-z 0-9 + / (this one has 42)",
        ),
        ({}, {**ENV, "P_KEY": KEY + "="}, "(this one has 44)"),
        ({}, {**ENV, "P_KEY": KEY[:-1] + "-"}, "(this one has 43)"),
        (
            {"encoding_aes_key_file": "/nonexistent/k", "encoding_aes_key_env": "-"},
            None,
            "cannot read encoding_aes_key_file /nonexistent/k",
        ),
        ({"extra": "x"}, None, "extra: Extra inputs are not permitted"),
    ],
)
def test_errors(
    tmp_path: Path, fields: dict[str, str], environ: dict[str, str] | None, expected: str
) -> None:
    """Each mistake is one line naming the platform and the field, never a value."""
    message = error(write(tmp_path, table(**fields)), environ)
    assert expected in message
    assert message.startswith(f"platforms file {tmp_path / 'platforms.toml'}: platforms[0]")


def test_duplicate_and_empty_files(tmp_path: Path) -> None:
    """Two tables for one platform, no table, unknown keys and bad TOML are refused."""
    assert "duplicate component_appid" in error(write(tmp_path, table() + table()))
    assert "needs at least one [[platforms]]" in error(write(tmp_path, ""))
    assert "unknown top-level keys ['apps']" in error(write(tmp_path, "apps = 1\n"))
    assert "not valid TOML" in error(write(tmp_path, "[[platforms]\n"))
    assert "cannot read it" in error(tmp_path / "missing.toml")


def test_two_platforms(tmp_path: Path) -> None:
    """Several platforms in one file, each with its own values."""
    second = table(component_appid="wxb11529c136998cb6", token_env="P_TOKEN2")
    platforms = load_platforms(
        write(tmp_path, table() + second), environ={**ENV, "P_TOKEN2": "other1"}
    )
    assert [p.component_appid for p in platforms] == [APPID, "wxb11529c136998cb6"]
    assert platforms[1].token.get_secret_value() == "other1"


def test_authorizer_tickets_are_named_and_checked(tmp_path: Path) -> None:
    """`authorizer_tickets` takes an official account's ticket names, each once; another
    name is a one-line error naming the field."""
    from consumer_lib.wire.kinds import TokenKind

    good = write(tmp_path, table() + 'authorizer_tickets = ["jsapi", "wx_card", "jsapi"]\n')
    good.write_text(good.read_text().replace("\n\n", "\n", 1))
    (platform,) = load_platforms(good, environ=ENV)
    assert platform.authorizer_tickets == (TokenKind.JSAPI_TICKET, TokenKind.WX_CARD_TICKET)
    for bad in ('["corp_jsapi"]', '"jsapi"', "[1]"):
        path = write(tmp_path, table().rstrip("\n") + f"\nauthorizer_tickets = {bad}\n")
        assert "authorizer_tickets" in error(path)
