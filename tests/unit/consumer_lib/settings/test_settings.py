"""Settings from `WXTOKEN_*` variables, and the one-line `ConfigError` for bad ones."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from consumer_lib import ClientSettings, ConfigError
from consumer_lib.settings import DOTENV, load_settings
from producer.settings import ProducerSettings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No inherited WXTOKEN_* variable and no stray `.env` file reach the settings."""
    for name in list(os.environ):
        if name.upper().startswith("WXTOKEN_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def config_error(cls: type[ClientSettings] | type[ProducerSettings]) -> str:
    """Load `cls`, which must fail with `ConfigError`, and return its message."""
    with pytest.raises(ConfigError) as info:
        load_settings(cls)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_client_defaults() -> None:
    """With nothing set, the client points at local Redis and RabbitMQ with sane timeouts."""
    settings = load_settings(ClientSettings)
    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert settings.amqp_url == "amqp://guest:guest@127.0.0.1:5672/%2F"
    assert settings.exchange == "wxtoken.tokens"
    assert settings.key_prefix == "wxtoken"
    assert settings.redis_timeout_s == 2.0
    assert settings.reconnect_max_s == 3.0
    assert settings.poll_interval_s == 2.0
    assert settings.heartbeat_s == 30


def test_producer_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    """With only the apps file set, the producer talks to the real WeChat with WeChat's timing."""
    monkeypatch.setenv("WXTOKEN_APPS_FILE", "/etc/wxtoken/apps.toml")
    settings = load_settings(ProducerSettings)
    assert settings.apps_file == Path("/etc/wxtoken/apps.toml")
    assert settings.wechat_base_url == "https://api.weixin.qq.com"
    assert settings.wecom_base_url == "https://qyapi.weixin.qq.com"
    assert settings.refresh_margin_ratio == 0.2
    assert settings.refresh_margin_max_s == 300.0
    assert settings.republish_interval_s == 60.0
    assert settings.log_level == "INFO"
    assert settings.producer_id  # hostname-pid


def test_client_reads_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every WXTOKEN_* variable lands in the matching setting, numbers parsed."""
    monkeypatch.setenv("WXTOKEN_REDIS_URL", "rediss://cache.internal:6380/3")
    monkeypatch.setenv("WXTOKEN_AMQP_URL", "amqps://u:p@mq.internal:5671/prod")
    monkeypatch.setenv("WXTOKEN_EXCHANGE", "tokens.prod")
    monkeypatch.setenv("WXTOKEN_KEY_PREFIX", "wx-prod")
    monkeypatch.setenv("WXTOKEN_REDIS_TIMEOUT_S", "0.5")
    monkeypatch.setenv("WXTOKEN_RECONNECT_MAX_S", "10")
    monkeypatch.setenv("WXTOKEN_POLL_INTERVAL_S", "7.5")
    monkeypatch.setenv("WXTOKEN_HEARTBEAT_S", "0")
    settings = load_settings(ClientSettings)
    assert settings.redis_url == "rediss://cache.internal:6380/3"
    assert settings.amqp_url == "amqps://u:p@mq.internal:5671/prod"
    assert settings.exchange == "tokens.prod"
    assert settings.key_prefix == "wx-prod"
    assert settings.redis_timeout_s == 0.5
    assert settings.reconnect_max_s == 10.0
    assert settings.poll_interval_s == 7.5
    assert settings.heartbeat_s == 0


def test_variable_names_are_case_insensitive(monkeypatch: pytest.MonkeyPatch) -> None:
    """A lower-case wxtoken_exchange is read like the upper-case one."""
    monkeypatch.setenv("wxtoken_exchange", "lower.case")
    assert load_settings(ClientSettings).exchange == "lower.case"


@pytest.mark.parametrize(
    "url", ["http://api.weixin.qq.com", "http://10.0.0.8:8080", "http://wechat.example.com"]
)
def test_plain_http_upstream_is_only_for_a_local_sandbox(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, url: str
) -> None:
    """Classic fetches carry the secret in the query string: http:// to a real host is refused."""
    monkeypatch.setenv("WXTOKEN_APPS_FILE", str(tmp_path / "apps.toml"))
    monkeypatch.setenv("WXTOKEN_WECHAT_BASE_URL", url)
    with pytest.raises(ConfigError, match=r"WXTOKEN_WECHAT_BASE_URL.*only for a local sandbox"):
        load_settings(ProducerSettings)
    for local in ("http://127.0.0.1:8900", "http://localhost:8080", "http://sandbox:8080"):
        monkeypatch.setenv("WXTOKEN_WECHAT_BASE_URL", local)
        assert load_settings(ProducerSettings).wechat_base_url == local


def test_producer_reads_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The producer's own variables are read and typed."""
    monkeypatch.setenv("WXTOKEN_APPS_FILE", str(tmp_path / "apps.toml"))
    monkeypatch.setenv("WXTOKEN_WECHAT_BASE_URL", "http://127.0.0.1:8900")
    monkeypatch.setenv("WXTOKEN_WECOM_BASE_URL", "http://127.0.0.1:8901")
    monkeypatch.setenv("WXTOKEN_PRODUCER_ID", "prod-a@host1")
    monkeypatch.setenv("WXTOKEN_REPUBLISH_INTERVAL_S", "5")
    monkeypatch.setenv("WXTOKEN_REFRESH_MARGIN_RATIO", "0.3")
    monkeypatch.setenv("WXTOKEN_LOG_LEVEL", "DEBUG")
    settings = load_settings(ProducerSettings)
    assert settings.apps_file == tmp_path / "apps.toml"
    assert settings.wechat_base_url == "http://127.0.0.1:8900"
    assert settings.wecom_base_url == "http://127.0.0.1:8901"
    assert settings.producer_id == "prod-a@host1"
    assert settings.republish_interval_s == 5.0
    assert settings.refresh_margin_ratio == 0.3
    assert settings.log_level == "DEBUG"


def test_dotenv_is_read_only_when_the_entry_point_asks(tmp_path: Path) -> None:
    """A `.env` in the working directory supplies WXTOKEN_* values to an entry point that
    names it; the library alone (TokenClient.from_env, ClientSettings()) never reads it."""
    (tmp_path / ".env").write_text(
        "WXTOKEN_EXCHANGE=from.dotenv\nWXTOKEN_INSECURE_ACCEPT_UNSIGNED=1\n", encoding="utf-8"
    )
    assert load_settings(ClientSettings, DOTENV).exchange == "from.dotenv"
    assert load_settings(ClientSettings).exchange == "wxtoken.tokens"
    assert not load_settings(ClientSettings).insecure_accept_unsigned
    assert ClientSettings().exchange == "wxtoken.tokens"


def test_environment_beats_dotenv(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A real environment variable wins over the `.env` file."""
    (tmp_path / ".env").write_text("WXTOKEN_EXCHANGE=from.dotenv\n", encoding="utf-8")
    monkeypatch.setenv("WXTOKEN_EXCHANGE", "from.env")
    assert load_settings(ClientSettings, DOTENV).exchange == "from.env"


def test_overrides_beat_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keyword overrides to `load_settings` win over the environment."""
    monkeypatch.setenv("WXTOKEN_EXCHANGE", "from.env")
    assert load_settings(ClientSettings, exchange="given").exchange == "given"


BAD_CLIENT_VALUES = [
    ("WXTOKEN_REDIS_URL", "http://x"),
    ("WXTOKEN_REDIS_URL", "redis://:notaport"),
    ("WXTOKEN_REDIS_URL", "redis://localhost:notaport/0"),
    ("WXTOKEN_REDIS_URL", "redis://"),
    ("WXTOKEN_REDIS_URL", "localhost:6379"),
    ("WXTOKEN_AMQP_URL", "http://x"),
    ("WXTOKEN_AMQP_URL", "amqp://guest:guest@host:port/%2F"),
    ("WXTOKEN_AMQP_URL", "amqp:///%2F"),
    ("WXTOKEN_EXCHANGE", "has space"),
    ("WXTOKEN_EXCHANGE", ""),
    ("WXTOKEN_EXCHANGE", "x" * 201),
    ("WXTOKEN_KEY_PREFIX", "a:b"),
    ("WXTOKEN_REDIS_TIMEOUT_S", "abc"),
    ("WXTOKEN_REDIS_TIMEOUT_S", "0"),
    ("WXTOKEN_REDIS_TIMEOUT_S", "-1"),
    ("WXTOKEN_REDIS_TIMEOUT_S", "61"),
    ("WXTOKEN_RECONNECT_MAX_S", "1000"),
    ("WXTOKEN_POLL_INTERVAL_S", "nan"),
    ("WXTOKEN_HEARTBEAT_S", "1.5"),
    ("WXTOKEN_HEARTBEAT_S", "-1"),
]


@pytest.mark.parametrize(("variable", "value"), BAD_CLIENT_VALUES)
def test_bad_client_value_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    """A bad value raises a one-line `ConfigError` naming the variable."""
    monkeypatch.setenv(variable, value)
    assert variable in config_error(ClientSettings)


BAD_PRODUCER_VALUES = [
    ("WXTOKEN_WECHAT_BASE_URL", "ftp://api.weixin.qq.com"),
    ("WXTOKEN_WECHAT_BASE_URL", "https://"),
    ("WXTOKEN_WECOM_BASE_URL", "ftp://qyapi.weixin.qq.com"),
    ("WXTOKEN_WECOM_BASE_URL", "qyapi.weixin.qq.com"),
    ("WXTOKEN_PRODUCER_ID", "has space"),
    ("WXTOKEN_REFRESH_MARGIN_RATIO", "1"),
    ("WXTOKEN_REFRESH_MARGIN_RATIO", "0"),
    ("WXTOKEN_REPUBLISH_INTERVAL_S", "0"),
    ("WXTOKEN_RETRY_CAP_S", "100000"),
    ("WXTOKEN_HTTP_READ_TIMEOUT_S", "soon"),
    ("WXTOKEN_LOG_LEVEL", "TRACE"),
    ("WXTOKEN_REDIS_URL", "http://x"),
]


@pytest.mark.parametrize(("variable", "value"), BAD_PRODUCER_VALUES)
def test_bad_producer_value_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    """A bad producer value raises a one-line `ConfigError` naming the variable."""
    monkeypatch.setenv("WXTOKEN_APPS_FILE", "apps.toml")
    monkeypatch.setenv(variable, value)
    assert variable in config_error(ProducerSettings)


def test_producer_requires_apps_file() -> None:
    """Without WXTOKEN_APPS_FILE the producer refuses to start, naming the variable."""
    message = config_error(ProducerSettings)
    assert "WXTOKEN_APPS_FILE" in message
    assert "required" in message.lower()


def test_several_bad_values_are_all_named_on_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two bad variables are both named in the single-line message."""
    monkeypatch.setenv("WXTOKEN_REDIS_URL", "http://x")
    monkeypatch.setenv("WXTOKEN_EXCHANGE", "bad name")
    message = config_error(ClientSettings)
    assert "WXTOKEN_REDIS_URL" in message
    assert "WXTOKEN_EXCHANGE" in message


def test_redis_url_error_says_what_is_wrong(monkeypatch: pytest.MonkeyPatch) -> None:
    """The message for a wrong scheme tells which schemes are accepted."""
    monkeypatch.setenv("WXTOKEN_REDIS_URL", "http://x")
    assert "redis://" in config_error(ClientSettings)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("WXTOKEN_REDIS_URL", "http://:hunter2-pw@cache:6379"),
        ("WXTOKEN_REDIS_URL", "redis://:hunter2-pw@cache:notaport"),
        ("WXTOKEN_AMQP_URL", "https://guest:hunter2-pw@mq/%2F"),
        ("WXTOKEN_AMQP_URL", "amqp://guest:hunter2-pw@mq:port/%2F"),
    ],
)
def test_url_errors_do_not_echo_passwords(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    """A bad URL's message never repeats the password inside it."""
    monkeypatch.setenv(variable, value)
    assert "hunter2" not in config_error(ClientSettings)


def test_settings_are_frozen() -> None:
    """Settings read once cannot be changed afterwards."""
    settings = load_settings(ClientSettings)
    with pytest.raises(ValueError, match="frozen"):
        settings.exchange = "other"  # type: ignore[misc]


URL_PARTS_IGNORED = [
    ("WXTOKEN_REDIS_URL", "redis://127.0.0.1:6379/notadb", "database number"),
    ("WXTOKEN_REDIS_URL", "redis://127.0.0.1:6379/1/2", "database number"),
    ("WXTOKEN_REDIS_URL", "redis://127.0.0.1:6379/0?dbb=1", "unknown URL option 'dbb'"),
    ("WXTOKEN_REDIS_URL", "redis://127.0.0.1:6379/0?db=", "no value"),
    ("WXTOKEN_REDIS_URL", "redis://127.0.0.1:6379/0?db=x", "bad value"),
    ("WXTOKEN_REDIS_URL", "redis://127.0.0.1:6379/1?db=2", "differ"),
    ("WXTOKEN_REDIS_URL", "redis://:hunter2#pw@127.0.0.1:6379/0", "%23"),
    ("WXTOKEN_REDIS_URL", "unix://host/tmp/redis.sock", "not a host"),
    ("WXTOKEN_AMQP_URL", "amqp://u:p@127.0.0.1:5672/prod/extra", "one segment"),
    ("WXTOKEN_AMQP_URL", "amqp://u:p@127.0.0.1:5672/%2F?heartbeat=5", "set by wxtoken"),
    ("WXTOKEN_AMQP_URL", "amqp://u:p@127.0.0.1:5672/%2F?nosuch=1", "unknown URL option"),
    ("WXTOKEN_AMQP_URL", "amqp://u:p@mq1/%2F,amqp://u:p@mq2/%2F?locale=", "URL 2 of 2"),
    ("WXTOKEN_AMQP_URL", "amqp://u@127.0.0.1:5672/%2F", "without a password"),
]


def _every_settings_class() -> list[tuple[str, type[ClientSettings], dict[str, str]]]:
    from consumer_lib.settings import CommonSettings
    from ops.gateway._settings import GatewaySettings

    return [
        ("consumer", ClientSettings, {}),
        ("cli", CommonSettings, {}),  # type: ignore[list-item]
        ("producer", ProducerSettings, {"WXTOKEN_APPS_FILE": "apps.toml"}),
        ("gateway", GatewaySettings, {"WXTOKEN_GATEWAY_KEYS_FILE": "keys.json"}),
    ]


@pytest.mark.parametrize(("variable", "value", "said"), URL_PARTS_IGNORED)
@pytest.mark.parametrize("who", ["consumer", "cli", "producer", "gateway"])
def test_url_parts_a_client_library_would_ignore_are_refused(
    monkeypatch: pytest.MonkeyPatch, who: str, variable: str, value: str, said: str
) -> None:
    """A Redis database that is not a number (redis-py would write into database 0), an
    unknown, empty or overridden query option, a #fragment, a second vhost segment: one
    line naming the variable, in every program's settings, never echoing the password."""
    [(_, cls, required)] = [c for c in _every_settings_class() if c[0] == who]
    for name, required_value in required.items():
        monkeypatch.setenv(name, required_value)
    monkeypatch.setenv(variable, value)
    message = config_error(cls)
    assert message.startswith(f"{variable}: ") or f"; {variable}: " in message
    assert said in message
    assert "hunter2" not in message


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("WXTOKEN_REDIS_URL", "redis://127.0.0.1:6379"),
        ("WXTOKEN_REDIS_URL", "redis://127.0.0.1:6379/"),
        ("WXTOKEN_REDIS_URL", "redis://127.0.0.1:6379/15"),
        ("WXTOKEN_REDIS_URL", "redis://127.0.0.1:6379/2?db=2&socket_keepalive=true"),
        ("WXTOKEN_REDIS_URL", "unix:///run/redis/redis.sock?db=3"),
        ("WXTOKEN_AMQP_URL", "amqp://u:p@127.0.0.1:5672"),
        ("WXTOKEN_AMQP_URL", "amqp://u:p@127.0.0.1:5672/prod?frame_max=131072"),
    ],
)
def test_url_parts_a_client_library_reads_are_accepted(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    """What redis-py and pika do read stays accepted."""
    monkeypatch.setenv(variable, value)
    assert load_settings(ClientSettings) is not None
