"""The producer's apps file: secrets from env, file or (sandbox only) inline, and its errors."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from consumer_lib import ConfigError
from producer.apps import AppConfig, TokenApi, load_apps

SECRET = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
WECHAT = "https://api.weixin.qq.com"
SANDBOX = "http://127.0.0.1:8900"


def table(app_id: str, **fields: str) -> str:
    """One [[apps]] table with string-valued keys."""
    lines = ["[[apps]]", f'app_id = "{app_id}"', *(f'{k} = "{v}"' for k, v in fields.items())]
    return "\n".join(lines) + "\n\n"


def write_apps(tmp_path: Path, text: str) -> Path:
    """Write `text` as the apps file and return its path."""
    path = tmp_path / "apps.toml"
    path.write_text(text, encoding="utf-8")
    return path


def load(
    path: Path, *, base_url: str = WECHAT, environ: dict[str, str] | None = None
) -> list[AppConfig]:
    """`load_apps` with an explicit environment (never the process's own)."""
    return load_apps(path, wechat_base_url=base_url, environ=environ or {})


def load_error(path: Path, *, base_url: str = WECHAT, environ: dict[str, str] | None = None) -> str:
    """Load the file, which must fail; return the one-line, secret-free message."""
    with pytest.raises(ConfigError) as info:
        load(path, base_url=base_url, environ=environ)
    message = str(info.value)
    assert "\n" not in message
    assert SECRET not in message
    assert str(path) in message
    return message


# ------------------------------------------------------------------ good files
def test_secret_from_environment(tmp_path: Path) -> None:
    """`secret_env` takes the secret from the named variable."""
    path = write_apps(tmp_path, '[[apps]]\napp_id = "wxaaa"\nsecret_env = "WX_A_SECRET"\n')
    (app,) = load(path, environ={"WX_A_SECRET": SECRET})
    assert app.app_id == "wxaaa"
    assert app.secret.get_secret_value() == SECRET
    assert app.token_api is TokenApi.STABLE


def test_secret_from_file_is_stripped(tmp_path: Path) -> None:
    """`secret_file` reads the secret from a file, without its trailing newline."""
    secret_path = tmp_path / "wx_secret"
    secret_path.write_text(SECRET + "\n", encoding="utf-8")
    path = write_apps(
        tmp_path,
        f'[[apps]]\napp_id = "wxbbb"\nsecret_file = "{secret_path}"\ntoken_api = "classic"\n',
    )
    (app,) = load(path)
    assert app.secret.get_secret_value() == SECRET
    assert app.token_api is TokenApi.CLASSIC


def test_several_apps_keep_their_order(tmp_path: Path) -> None:
    """Every [[apps]] table becomes one app, in file order, each with its own secret."""
    path = write_apps(
        tmp_path,
        table("wx1", secret_env="S1") + table("wx2", secret_env="S2"),
    )
    apps = load(path, environ={"S1": "secret-one", "S2": "secret-two"})
    assert [a.app_id for a in apps] == ["wx1", "wx2"]
    assert [a.secret.get_secret_value() for a in apps] == ["secret-one", "secret-two"]


def test_inline_secret_allowed_for_sandbox_with_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An inline secret works against a local sandbox and logs a warning naming the app."""
    caplog.set_level(logging.DEBUG)
    path = write_apps(tmp_path, f'[[apps]]\napp_id = "wxsand"\nsecret = "{SECRET}"\n')
    (app,) = load(path, base_url=SANDBOX)
    assert app.secret.get_secret_value() == SECRET
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "wxsand" in warnings[0].getMessage()
    assert "inline" in warnings[0].getMessage()
    assert SECRET not in caplog.text


@pytest.mark.parametrize(
    "base_url", [WECHAT, "https://api.weixin.qq.com/", "https://qyapi.weixin.qq.com"]
)
def test_inline_secret_refused_for_real_wechat(tmp_path: Path, base_url: str) -> None:
    """An inline secret is refused when the upstream is WeChat itself."""
    path = write_apps(tmp_path, f'[[apps]]\napp_id = "wxreal"\nsecret = "{SECRET}"\n')
    message = load_error(path, base_url=base_url)
    assert "wxreal" in message
    assert "inline secret" in message


@pytest.mark.parametrize(
    "base_url",
    ["http://127.0.0.1:8900", "http://[::1]:8080", "http://localhost:8080", "http://sandbox:8080"],
)
def test_inline_secret_allowed_for_local_sandbox(tmp_path: Path, base_url: str) -> None:
    """Loopback addresses, localhost and a one-label compose host count as a local sandbox."""
    path = write_apps(tmp_path, f'[[apps]]\napp_id = "wxsand"\nsecret = "{SECRET}"\n')
    (app,) = load(path, base_url=base_url)
    assert app.secret.get_secret_value() == SECRET


@pytest.mark.parametrize(
    "base_url",
    [
        "https://api.weixin.qq.com",
        "https://api.weixin.qq.com.",
        "https://API.WEIXIN.QQ.COM",
        "http://10.1.2.3:8080",
        "https://example.com",
    ],
)
def test_inline_secret_refused_unless_local_sandbox(tmp_path: Path, base_url: str) -> None:
    """Any upstream that is not surely local, however WeChat's host is spelt, refuses inline."""
    path = write_apps(tmp_path, f'[[apps]]\napp_id = "wxreal"\nsecret = "{SECRET}"\n')
    message = load_error(path, base_url=base_url)
    assert "wxreal" in message
    assert "inline secret" in message


def test_relative_secret_file_is_relative_to_the_apps_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A relative `secret_file` is found next to the apps file, whatever the working directory."""
    config = tmp_path / "config"
    (config / "secrets").mkdir(parents=True)
    (config / "secrets" / "wx_rel").write_text(SECRET + "\n", encoding="utf-8")
    path = write_apps(config, '[[apps]]\napp_id = "wxrel"\nsecret_file = "secrets/wx_rel"\n')
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "secrets").mkdir(parents=True)
    (elsewhere / "secrets" / "wx_rel").write_text("wrong-secret-in-cwd\n", encoding="utf-8")
    monkeypatch.chdir(elsewhere)
    (app,) = load(path)
    assert app.secret.get_secret_value() == SECRET


def test_secret_never_in_repr_or_str(tmp_path: Path) -> None:
    """`repr()` and `str()` of an app, and of the list, show no secret."""
    path = write_apps(tmp_path, '[[apps]]\napp_id = "wxaaa"\nsecret_env = "WX_A_SECRET"\n')
    apps = load(path, environ={"WX_A_SECRET": SECRET})
    for shown in (repr(apps[0]), str(apps[0]), repr(apps), f"{apps[0]}"):
        assert SECRET not in shown
    assert SECRET not in apps[0].model_dump_json()


# ------------------------------------------------------------------ errors
def test_missing_environment_variable(tmp_path: Path) -> None:
    """A secret_env naming an unset variable is an error naming the variable and app."""
    path = write_apps(tmp_path, '[[apps]]\napp_id = "wxaaa"\nsecret_env = "WX_MISSING"\n')
    message = load_error(path)
    assert "WX_MISSING" in message
    assert "wxaaa" in message


@pytest.mark.parametrize(
    "secret_env", ["abcdef0123456789abcdef", "WX_" + "A" * 70], ids=["lower-case", "too long"]
)
def test_missing_environment_variable_not_echoed_unless_a_name(
    tmp_path: Path, secret_env: str
) -> None:
    """A secret_env that is not an upper-case name (maybe a pasted secret) is not echoed."""
    path = write_apps(tmp_path, f'[[apps]]\napp_id = "wxaaa"\nsecret_env = "{secret_env}"\n')
    message = load_error(path)
    assert secret_env not in message
    assert "secret_env" in message
    assert "wxaaa" in message


def test_blank_environment_variable(tmp_path: Path) -> None:
    """A secret_env variable holding only whitespace counts as not set."""
    path = write_apps(tmp_path, '[[apps]]\napp_id = "wxaaa"\nsecret_env = "WX_BLANK"\n')
    message = load_error(path, environ={"WX_BLANK": "  \n"})
    assert "WX_BLANK" in message


def test_missing_secret_file(tmp_path: Path) -> None:
    """A secret_file that does not exist is an error naming the file and app."""
    secret_path = tmp_path / "nope"
    path = write_apps(tmp_path, f'[[apps]]\napp_id = "wxaaa"\nsecret_file = "{secret_path}"\n')
    message = load_error(path)
    assert str(secret_path) in message
    assert "wxaaa" in message


def test_unreadable_secret_file(tmp_path: Path) -> None:
    """A secret_file that is a directory cannot be read and says so."""
    path = write_apps(tmp_path, f'[[apps]]\napp_id = "wxaaa"\nsecret_file = "{tmp_path}"\n')
    message = load_error(path)
    assert "cannot read secret_file" in message
    assert "wxaaa" in message


def test_secret_file_not_utf8(tmp_path: Path) -> None:
    """A secret_file with bytes that are not UTF-8 is refused, not crashed on."""
    secret_path = tmp_path / "binary"
    secret_path.write_bytes(b"\xff\xfe" + SECRET.encode())
    path = write_apps(tmp_path, f'[[apps]]\napp_id = "wxaaa"\nsecret_file = "{secret_path}"\n')
    assert "cannot read secret_file" in load_error(path)


def test_empty_secret_file(tmp_path: Path) -> None:
    """A secret_file holding only whitespace is an error saying it is empty."""
    secret_path = tmp_path / "empty"
    secret_path.write_text("\n\n", encoding="utf-8")
    path = write_apps(tmp_path, f'[[apps]]\napp_id = "wxaaa"\nsecret_file = "{secret_path}"\n')
    message = load_error(path)
    assert "empty" in message
    assert "wxaaa" in message


def test_empty_inline_secret(tmp_path: Path) -> None:
    """An empty inline secret is refused even in the sandbox."""
    path = write_apps(tmp_path, '[[apps]]\napp_id = "wxaaa"\nsecret = ""\n')
    assert "empty" in load_error(path, base_url=SANDBOX)


def test_secret_with_whitespace_inside(tmp_path: Path) -> None:
    """A secret with a space inside is refused without echoing it."""
    path = write_apps(tmp_path, '[[apps]]\napp_id = "wxaaa"\nsecret_env = "WX_A"\n')
    message = load_error(path, environ={"WX_A": SECRET[:10] + " " + SECRET[10:]})
    assert SECRET[:10] not in message
    assert "whitespace" in message


def test_two_secret_sources(tmp_path: Path) -> None:
    """Giving both secret_env and an inline secret is an error naming the app."""
    path = write_apps(
        tmp_path, f'[[apps]]\napp_id = "wxaaa"\nsecret_env = "WX_A"\nsecret = "{SECRET}"\n'
    )
    message = load_error(path, base_url=SANDBOX, environ={"WX_A": SECRET})
    assert "exactly one" in message
    assert "wxaaa" in message


def test_no_secret_source(tmp_path: Path) -> None:
    """An app without any secret is an error naming the app."""
    path = write_apps(tmp_path, '[[apps]]\napp_id = "wxaaa"\n')
    message = load_error(path)
    assert "exactly one" in message
    assert "wxaaa" in message


def test_duplicate_app_id(tmp_path: Path) -> None:
    """The same app_id twice is an error naming it."""
    path = write_apps(
        tmp_path,
        table("wxdup", secret_env="S") * 2,
    )
    message = load_error(path, environ={"S": SECRET})
    assert "duplicate" in message
    assert "wxdup" in message
    assert "apps[1]" in message


def test_unknown_key_in_app(tmp_path: Path) -> None:
    """A misspelt key (here holding the secret) is refused by name, the secret not echoed."""
    path = write_apps(
        tmp_path, f'[[apps]]\napp_id = "wxaaa"\nsecret_env = "S"\nsecrte = "{SECRET}"\n'
    )
    message = load_error(path, environ={"S": SECRET})
    assert "secrte" in message
    assert "apps[0]" in message


def test_unknown_top_level_key(tmp_path: Path) -> None:
    """A top-level key other than `apps` is refused by name."""
    path = write_apps(tmp_path, 'ap = 1\n[[apps]]\napp_id = "wxaaa"\nsecret_env = "S"\n')
    assert "['ap']" in load_error(path, environ={"S": SECRET})


def test_malformed_toml(tmp_path: Path) -> None:
    """A file that is not TOML is refused, without echoing its content."""
    path = write_apps(tmp_path, f'[[apps]\napp_id = "wxaaa"\nsecret = "{SECRET}\n')
    assert "not valid TOML" in load_error(path, base_url=SANDBOX)


def test_unterminated_string_does_not_echo_secret(tmp_path: Path) -> None:
    """A TOML error on the secret's own line does not show the secret."""
    path = write_apps(tmp_path, f'[[apps]]\napp_id = "wxaaa"\nsecret = "{SECRET}\n')
    assert "not valid TOML" in load_error(path, base_url=SANDBOX)


def test_file_not_utf8(tmp_path: Path) -> None:
    """An apps file that is not UTF-8 is refused as not valid TOML."""
    path = tmp_path / "apps.toml"
    path.write_bytes(b'[[apps]]\napp_id = "wx\xff"\n')
    assert "not valid TOML" in load_error(path)


def test_missing_apps_file(tmp_path: Path) -> None:
    """An apps file that does not exist is an error naming it."""
    assert "cannot read" in load_error(tmp_path / "missing.toml")


@pytest.mark.parametrize("text", ["", "apps = []\n", "apps = 1\n", "[apps]\napp_id = 'wx'\n"])
def test_no_apps_tables(tmp_path: Path, text: str) -> None:
    """A file without any [[apps]] table is refused."""
    assert "[[apps]]" in load_error(write_apps(tmp_path, text))


def test_app_that_is_not_a_table(tmp_path: Path) -> None:
    """An `apps` array of strings is refused without echoing them."""
    path = write_apps(tmp_path, f'apps = ["{SECRET}"]\n')
    assert "apps[0]" in load_error(path)


def test_bad_token_api(tmp_path: Path) -> None:
    """A token_api other than stable or classic is refused by name."""
    path = write_apps(
        tmp_path, '[[apps]]\napp_id = "wxaaa"\nsecret_env = "S"\ntoken_api = "fancy"\n'
    )
    message = load_error(path, environ={"S": SECRET})
    assert "token_api" in message
    assert "apps[0]" in message


@pytest.mark.parametrize(
    "fields",
    [
        'secret_env = "S"\nsecrte = "x"\n',
        'secret_env = "S"\ntoken_api = "fancy"\n',
        'secret_env = "NOPE"\n',
    ],
    ids=["unknown key", "bad token_api", "unset variable"],
)
def test_errors_name_the_app_id_once(tmp_path: Path, fields: str) -> None:
    """Every error in an app's table names it by index and app_id, once, so it is easy to find."""
    path = write_apps(tmp_path, f'[[apps]]\napp_id = "wx0123abcd"\n{fields}')
    message = load_error(path, environ={"S": SECRET})
    assert "apps[0] (wx0123abcd)" in message
    assert message.count("wx0123abcd") == 1


@pytest.mark.parametrize("app_id", ["", "wx app", "wx/../x", "x" * 65, "wx\\nsecond"])
def test_bad_app_id(tmp_path: Path, app_id: str) -> None:
    """An app_id that is empty, too long or has odd characters is refused by field name."""
    path = write_apps(tmp_path, f'[[apps]]\napp_id = "{app_id}"\nsecret_env = "S"\n')
    message = load_error(path, environ={"S": SECRET})
    assert "app_id" in message
    assert "apps[0]" in message


def test_non_string_app_id(tmp_path: Path) -> None:
    """A numeric app_id is refused (app ids are strings)."""
    path = write_apps(tmp_path, '[[apps]]\napp_id = 12345\nsecret_env = "S"\n')
    assert "app_id" in load_error(path, environ={"S": SECRET})


def test_bad_secret_env_name(tmp_path: Path) -> None:
    """A secret_env that is not a variable name (say, the secret pasted in) is refused unechoed."""
    path = write_apps(
        tmp_path, f'[[apps]]\napp_id = "wxaaa"\nsecret_env = "{SECRET[:8]}-{SECRET}"\n'
    )
    assert "secret_env" in load_error(path)


def test_error_in_second_app_names_it(tmp_path: Path) -> None:
    """A problem in a later app names that app, not the first one."""
    path = write_apps(
        tmp_path,
        table("wxgood", secret_env="S") + table("wxbad", secret_env="NOPE"),
    )
    message = load_error(path, environ={"S": SECRET})
    assert "wxbad" in message
    assert "wxgood" not in message
