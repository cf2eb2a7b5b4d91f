"""Several broker URLs and Redis Sentinel URLs: validation, one-line errors that never show
a password, pika parameters per broker in order, and sentinel clients built without I/O."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pika
import pika.exceptions
import pytest
import redis
from redis.sentinel import (
    MasterNotFoundError,
    SentinelConnectionPool,
    SentinelManagedConnection,
    SentinelManagedSSLConnection,
)

from consumer_lib import BrokerError, ClientSettings, ConfigError, StoreError, TokenClient
from consumer_lib.amqp.params import connection_parameters, describe_amqp_error
from consumer_lib.redis_errors import REDIS_ERRORS
from consumer_lib.settings import SentinelUrl, load_settings, parse_sentinel_url
from consumer_lib.snapshot import SnapshotReader, connect_redis
from tests.waiting import wait_for

SECRET = "hunter2-pw"
TWO_BROKERS = (
    f"amqp://guest:{SECRET}@mq1.internal:5672/%2F,amqps://guest:{SECRET}@mq2.internal:5671/prod"
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No inherited WXTOKEN_* variable and no stray `.env` file reach the settings."""
    for name in list(os.environ):
        if name.upper().startswith("WXTOKEN_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def config_error(monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> str:
    """Set `variable`, load the client settings (which must fail), return the message."""
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as info:
        load_settings(ClientSettings)
    message = str(info.value)
    assert "\n" not in message
    assert variable in message
    return message


# ------------------------------------------------------------------ several brokers
@pytest.mark.parametrize(
    "value",
    [
        TWO_BROKERS,
        "amqp://u:p@mq1:5672/%2F , amqp://u:p@mq2:5672/%2F,amqp://u:p@mq3/%2F",
        "amqp://guest:guest@127.0.0.1:5672/%2F",
    ],
)
def test_one_or_several_broker_urls_are_accepted(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    """One URL, or several separated by commas (spaces around them allowed), is accepted."""
    monkeypatch.setenv("WXTOKEN_AMQP_URL", value)
    assert load_settings(ClientSettings).amqp_url == value


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (f"amqp://guest:{SECRET}@mq1:5672/%2F,", "URL 2 of 2: empty"),
        (f"amqp://u:{SECRET}@mq1/%2F,,amqp://u:{SECRET}@mq2/%2F", "URL 2 of 3: empty"),
        (f",amqp://u:{SECRET}@mq1/%2F", "URL 1 of 2: empty"),
        ("", "empty"),
        (f"amqp://u:{SECRET}@mq1/%2F,http://u:{SECRET}@mq2/%2F", "URL 2 of 2: scheme must be"),
        (f"amqp://u:{SECRET}@mq1:notaport/%2F,amqp://u:{SECRET}@mq2/%2F", "URL 1 of 2: bad port"),
        (f"amqp://u:{SECRET}@mq1/%2F,amqp://u:{SECRET}@:5672/%2F", "URL 2 of 2: no host"),
        (f"amqp://u:{SECRET}@mq1:99999/%2F", "bad port"),
    ],
)
def test_bad_broker_lists_name_the_variable_and_the_element(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: str
) -> None:
    """A bad element is named by its position in a one-line error without the password."""
    message = config_error(monkeypatch, "WXTOKEN_AMQP_URL", value)
    assert expected in message
    assert SECRET not in message


def test_a_bad_port_is_not_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    """An unencoded `/` in a password ends the host part; its first half is not shown."""
    message = config_error(monkeypatch, "WXTOKEN_AMQP_URL", "amqp://guest:pass/word@mq:5672/%2F")
    assert "pass" not in message.replace("password", "")
    assert "bad port" in message


def test_connection_parameters_one_per_url_in_order() -> None:
    """Each URL gives one parameter set, in the given order, with the same explicit settings."""
    params = connection_parameters(
        TWO_BROKERS + ",amqp://other:pw@mq3.internal/%2F",
        connection_name="svc-1",
        heartbeat_s=17,
        timeout_s=3.0,
    )
    assert [(p.host, p.port, p.virtual_host) for p in params] == [
        ("mq1.internal", 5672, "/"),
        ("mq2.internal", 5671, "prod"),
        ("mq3.internal", 5672, "/"),
    ]
    assert params[1].ssl_options is not None
    for each in params:
        assert isinstance(each, pika.URLParameters)
        assert each.heartbeat == 17
        assert each.socket_timeout == 3.0
        assert each.stack_timeout == 6.0
        assert each.blocked_connection_timeout == 18.0
        assert each.connection_attempts == 1
        assert each.client_properties == {"connection_name": "svc-1"}
    assert params[0].credentials.password == SECRET
    assert SECRET not in repr(params)


def test_connection_parameters_of_one_url_is_a_list_of_one() -> None:
    """A single URL still gives a list, which `pika.BlockingConnection` takes as it is."""
    params = connection_parameters("amqp://u:p@mq:5672/%2F", connection_name="one")
    assert len(params) == 1
    assert params[0].host == "mq"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (f"amqp://u:{SECRET}@mq1/%2F,", "AMQP URL 2 of 2: empty"),
        (f"amqp://u:{SECRET}@mq1:port/%2F", "AMQP URL: bad host or port"),
        (f"amqp://u:{SECRET}@mq1/%2F?nosuch={SECRET}", "Unknown URL parameter"),
    ],
)
def test_connection_parameters_errors_hide_the_password(value: str, expected: str) -> None:
    """A URL that pika cannot use is a `BrokerError` that never shows the password."""
    with pytest.raises(BrokerError) as info:
        connection_parameters(value, connection_name="x")
    assert expected in str(info.value)
    assert SECRET not in str(info.value)


def test_unreachable_brokers_leave_no_password_in_errors_or_logs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """pika tries every URL; neither its error nor any log line (pika's own at DEBUG, the
    client's outage warning) contains the password."""
    caplog.set_level(logging.DEBUG)
    dead = f"amqp://guest:{SECRET}@127.0.0.1:1/%2F,amqp://guest:{SECRET}@127.0.0.1:2/%2F"
    with pytest.raises(pika.exceptions.AMQPConnectionError) as info:
        pika.BlockingConnection(connection_parameters(dead, connection_name="x"))
    assert "('127.0.0.1', 2)" in caplog.text  # pika went on to the second URL
    client = TokenClient(
        ClientSettings(
            insecure_accept_unsigned=True, amqp_url=dead, reconnect_max_s=0.2, poll_interval_s=0.2
        ),
        redis_client=redis.Redis(port=1, socket_connect_timeout=0.1),
    )
    try:
        client.start()
        wait_for(lambda: client._subscriber.last_error, message="a failed connection attempt")
        assert "broker unreachable: connection refused" in caplog.text
    finally:
        client.close()
    for text in (str(info.value), repr(info.value), describe_amqp_error(info.value), caplog.text):
        assert SECRET not in text


# ------------------------------------------------------------------ Redis Sentinel
@pytest.mark.parametrize(
    ("url", "parsed"),
    [
        (
            "redis+sentinel://s1:26379,s2:26380/mymaster",
            SentinelUrl(sentinels=(("s1", 26379), ("s2", 26380)), service="mymaster"),
        ),
        (
            "redis+sentinel://app:p%40ss@s1/mymaster/2",
            SentinelUrl(
                sentinels=(("s1", 26379),),
                service="mymaster",
                db=2,
                username="app",
                password="p@ss",
            ),
        ),
        (
            "rediss+sentinel://:pw@[::1]:26379, s2:1/svc.prod/",
            SentinelUrl(
                sentinels=(("::1", 26379), ("s2", 1)), service="svc.prod", password="pw", tls=True
            ),
        ),
    ],
)
def test_sentinel_urls_are_parsed_and_accepted(
    monkeypatch: pytest.MonkeyPatch, url: str, parsed: SentinelUrl
) -> None:
    """Hosts (default port 26379), service, database, credentials and TLS come out right."""
    assert parse_sentinel_url(url) == parsed
    monkeypatch.setenv("WXTOKEN_REDIS_URL", url)
    assert load_settings(ClientSettings).redis_url == url


def test_a_parsed_sentinel_url_hides_its_password() -> None:
    """The parsed form's repr shows no password."""
    assert SECRET not in repr(parse_sentinel_url(f"redis+sentinel://:{SECRET}@s1/m"))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (f"redis+sentinel://:{SECRET}@s1:26379", "no service name"),
        (f"redis+sentinel://:{SECRET}@s1:26379/", "no service name"),
        (f"redis+sentinel://:{SECRET}@s1:26379//0", "no service name"),
        (f"redis+sentinel://:{SECRET}@s1:notaport/m", "sentinel 1 in the host list: bad port"),
        (f"redis+sentinel://:{SECRET}@s1:26379,s2:0/m", "sentinel 2 in the host list: bad port"),
        (f"redis+sentinel://:{SECRET}@s1,,s2/m", "sentinel 2 in the host list has no host"),
        (f"redis+sentinel://:{SECRET}@/m", "no sentinel host:port"),
        (f"redis+sentinel://:{SECRET}@s1/m/zero", "must be a number"),
        (f"redis+sentinel://:{SECRET}@s1/m/0/x", "too many path parts"),
        (f"redis+sentinel://:{SECRET}@s1/m?db=1", "no ?query"),
        (f"sentinel://:{SECRET}@s1:26379/m", "redis+sentinel://"),
        (f"http://:{SECRET}@s1:26379/m", "scheme must be one of redis://"),
    ],
)
def test_bad_sentinel_urls_say_what_is_wrong(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: str
) -> None:
    """A bad sentinel URL gives a one-line error naming the variable, without the password."""
    message = config_error(monkeypatch, "WXTOKEN_REDIS_URL", value)
    assert expected in message
    assert SECRET not in message


@pytest.fixture
def sentinel_client() -> Iterator[redis.Redis]:
    """A client built from a sentinel URL (no connection is made until a command)."""
    client = connect_redis(f"redis+sentinel://app:{SECRET}@s1:26379,s2:26380/wxm/3", timeout_s=1.5)
    yield client
    client.close()


def test_connect_redis_with_a_sentinel_url_builds_a_master_client(
    sentinel_client: redis.Redis,
) -> None:
    """The pool asks the listed sentinels for service `wxm`'s master, with the plain client's
    timeouts, retries, database and credentials."""
    pool = sentinel_client.connection_pool
    assert isinstance(pool, SentinelConnectionPool)
    assert pool.service_name == "wxm"
    assert pool.is_master
    assert pool.connection_class is SentinelManagedConnection
    kwargs = pool.connection_kwargs
    assert kwargs["db"] == 3
    assert kwargs["username"] == "app"
    assert kwargs["password"] == SECRET
    assert kwargs["socket_timeout"] == 1.5
    assert kwargs["socket_connect_timeout"] == 1.5
    assert kwargs["retry"].get_retries() == 2
    assert kwargs["client_name"] == "wxtoken"
    sentinels = pool.sentinel_manager.sentinels
    assert [
        (s.connection_pool.connection_kwargs["host"], s.connection_pool.connection_kwargs["port"])
        for s in sentinels
    ] == [("s1", 26379), ("s2", 26380)]
    for sentinel in sentinels:
        asked = sentinel.connection_pool.connection_kwargs
        assert asked["socket_timeout"] == 1.5
        assert asked["retry"].get_retries() == 0  # the next sentinel is the retry
        assert asked["password"] is None  # the credentials are the master's
    assert SECRET not in repr(sentinel_client)


def test_a_tls_sentinel_url_uses_tls_to_the_master() -> None:
    """`rediss+sentinel://` makes the master connections TLS ones."""
    client = connect_redis("rediss+sentinel://s1/wxm")
    try:
        assert client.connection_pool.connection_class is SentinelManagedSSLConnection
    finally:
        client.close()


def test_a_plain_url_still_builds_a_plain_client() -> None:
    """A `redis://` URL gives an ordinary pool, as before."""
    client = connect_redis("redis://127.0.0.1:6390/2", timeout_s=0.7)
    try:
        assert not isinstance(client.connection_pool, SentinelConnectionPool)
        assert client.connection_pool.connection_kwargs["db"] == 2
    finally:
        client.close()


def test_no_reachable_sentinel_is_a_short_store_error() -> None:
    """`MasterNotFoundError` is a redis `ConnectionError`, so the reader turns it into a
    `StoreError` whose message names the service, not every sentinel client's settings."""
    assert issubclass(MasterNotFoundError, redis.ConnectionError)
    assert issubclass(MasterNotFoundError, REDIS_ERRORS)
    client = connect_redis(f"redis+sentinel://:{SECRET}@127.0.0.1:1/wxm", timeout_s=0.2)
    try:
        with pytest.raises(StoreError) as info:
            SnapshotReader(client).read("wxapp1")
    finally:
        client.close()
    expected = "reading wxapp1/access_token: MasterNotFoundError: No master found for 'wxm'"
    assert str(info.value) == expected
