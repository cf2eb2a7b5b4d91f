"""TLS settings for Redis and RabbitMQ: startup validation, and the verifying client options
built from them (redis-py keyword arguments, pika `SSLOptions`), without any network."""

from __future__ import annotations

import os
import ssl
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pika
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from redis.connection import SSLConnection
from redis.sentinel import SentinelManagedSSLConnection

from consumer_lib import ClientSettings, ConfigError
from consumer_lib.amqp.params import connection_parameters
from consumer_lib.errors import BrokerError
from consumer_lib.settings import TlsFiles, load_settings, tls_context
from consumer_lib.snapshot import connect_redis
from producer.settings import ProducerSettings
from tests.integration.servers import Pki, make_pki

REDISS = "rediss://cache.internal:6380/0"
AMQPS = "amqps://u:p@mq1.internal:5671/%2F"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No inherited WXTOKEN_* variable and no stray `.env` file reach the settings."""
    for name in list(os.environ):
        if name.upper().startswith("WXTOKEN_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A CA, a server and a client certificate in PEM files (made once for the module)."""
    return make_pki(tmp_path_factory.mktemp("pki"))


def config_error(monkeypatch: pytest.MonkeyPatch, **variables: str) -> str:
    """Set `WXTOKEN_<NAME>` variables, load the client settings (which must fail), and
    return the one-line message."""
    for name, value in variables.items():
        monkeypatch.setenv(f"WXTOKEN_{name.upper()}", value)
    with pytest.raises(ConfigError) as info:
        load_settings(ClientSettings)
    message = str(info.value)
    assert "\n" not in message
    return message


# ------------------------------------------------------------------ settings
def test_no_tls_options_by_default() -> None:
    """Without TLS variables both TLS views are None, so callers keep today's behaviour."""
    settings = load_settings(ClientSettings)
    assert settings.redis_tls is None
    assert settings.amqp_tls is None


def test_tls_files_come_from_the_environment(monkeypatch: pytest.MonkeyPatch, pki: Pki) -> None:
    """The six variables become the `redis_tls` and `amqp_tls` file sets."""
    monkeypatch.setenv("WXTOKEN_REDIS_URL", REDISS)
    monkeypatch.setenv("WXTOKEN_REDIS_TLS_CA_FILE", str(pki.ca_file))
    monkeypatch.setenv("WXTOKEN_REDIS_TLS_CERT_FILE", str(pki.client_cert_file))
    monkeypatch.setenv("WXTOKEN_REDIS_TLS_KEY_FILE", str(pki.client_key_file))
    monkeypatch.setenv("WXTOKEN_AMQP_URL", f"{AMQPS},amqps://u:p@mq2.internal/%2F")
    monkeypatch.setenv("WXTOKEN_AMQP_TLS_CA_FILE", str(pki.ca_file))
    settings = load_settings(ClientSettings)
    assert settings.redis_tls == TlsFiles(pki.ca_file, pki.client_cert_file, pki.client_key_file)
    assert settings.amqp_tls == TlsFiles(ca_file=pki.ca_file)


def test_an_empty_variable_means_not_set(monkeypatch: pytest.MonkeyPatch) -> None:
    """`WXTOKEN_REDIS_TLS_CA_FILE=` (as compose files write it) is no TLS option at all."""
    monkeypatch.setenv("WXTOKEN_REDIS_TLS_CA_FILE", "")
    monkeypatch.setenv("WXTOKEN_AMQP_TLS_CERT_FILE", " ")
    settings = load_settings(ClientSettings)
    assert settings.redis_tls is None
    assert settings.amqp_tls is None


def test_a_missing_file_names_the_variable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A path that does not exist is a one-line error naming the variable and the path."""
    missing = tmp_path / "nope" / "ca.pem"
    message = config_error(monkeypatch, redis_url=REDISS, redis_tls_ca_file=str(missing))
    assert message.startswith("WXTOKEN_REDIS_TLS_CA_FILE: no such file")
    assert str(missing) in message


def test_a_directory_is_not_a_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A directory where a PEM file is expected is refused."""
    message = config_error(monkeypatch, amqp_url=AMQPS, amqp_tls_ca_file=str(tmp_path))
    assert message.startswith("WXTOKEN_AMQP_TLS_CA_FILE: not a regular file")


def test_an_unreadable_file_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, pki: Pki
) -> None:
    """A file this process may not read is refused at startup (access is faked: root reads all)."""
    monkeypatch.setattr("consumer_lib.settings.tls.os.access", lambda path, mode: False)
    message = config_error(monkeypatch, amqp_url=AMQPS, amqp_tls_cert_file=str(pki.ca_file))
    assert message.startswith("WXTOKEN_AMQP_TLS_CERT_FILE: not readable")


@pytest.mark.parametrize("service", ["redis", "amqp"])
def test_a_cert_without_its_key_is_refused(
    monkeypatch: pytest.MonkeyPatch, pki: Pki, service: str
) -> None:
    """A client certificate without the key (or the reverse) names the missing variable."""
    url = REDISS if service == "redis" else AMQPS
    var = f"WXTOKEN_{service.upper()}"
    message = config_error(
        monkeypatch,
        **{f"{service}_url": url, f"{service}_tls_cert_file": str(pki.client_cert_file)},
    )
    assert message == f"{var}_TLS_CERT_FILE is set without {var}_TLS_KEY_FILE"
    monkeypatch.delenv(f"{var}_TLS_CERT_FILE")
    message = config_error(monkeypatch, **{f"{service}_tls_key_file": str(pki.client_key_file)})
    assert message == f"{var}_TLS_KEY_FILE is set without {var}_TLS_CERT_FILE"


@pytest.mark.parametrize(
    ("variables", "named"),
    [
        ({"redis_tls_ca_file": "CA"}, "WXTOKEN_REDIS_TLS_CA_FILE is set but WXTOKEN_REDIS_URL"),
        (
            {"redis_url": "redis+sentinel://s1:26379/wxm", "redis_tls_ca_file": "CA"},
            "WXTOKEN_REDIS_TLS_CA_FILE is set but WXTOKEN_REDIS_URL",
        ),
        (
            {"redis_url": "unix:///run/redis.sock", "redis_tls_cert_file": "CERT"},
            "WXTOKEN_REDIS_TLS_CERT_FILE is set but WXTOKEN_REDIS_URL",
        ),
        ({"amqp_tls_ca_file": "CA"}, "WXTOKEN_AMQP_TLS_CA_FILE is set but WXTOKEN_AMQP_URL"),
        (
            {"amqp_url": f"{AMQPS},amqp://u:p@mq2.internal/%2F", "amqp_tls_ca_file": "CA"},
            "WXTOKEN_AMQP_TLS_CA_FILE is set but WXTOKEN_AMQP_URL",
        ),
    ],
)
def test_tls_options_with_a_plaintext_url_are_refused(
    monkeypatch: pytest.MonkeyPatch, pki: Pki, variables: dict[str, str], named: str
) -> None:
    """A TLS file next to a redis://, unix://, redis+sentinel:// or (any) amqp:// URL is a
    configuration error, so a mistake never silently goes plaintext."""
    files = {"CA": str(pki.ca_file), "CERT": str(pki.client_cert_file)}
    message = config_error(monkeypatch, **{k: files.get(v, v) for k, v in variables.items()})
    assert message.startswith(named)
    assert "plaintext" in message
    assert "u:p@" not in message


def test_a_file_that_is_not_a_certificate_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A CA file without a PEM certificate in it fails at startup, not on the first connect."""
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    message = config_error(monkeypatch, redis_url=REDISS, redis_tls_ca_file=str(junk))
    assert message.startswith("WXTOKEN_REDIS_TLS_CA_FILE: cannot load the CA file")


def test_a_key_that_does_not_match_the_cert_is_refused(
    monkeypatch: pytest.MonkeyPatch, pki: Pki
) -> None:
    """A client certificate with someone else's key fails at startup."""
    message = config_error(
        monkeypatch,
        amqp_url=AMQPS,
        amqp_tls_cert_file=str(pki.client_cert_file),
        amqp_tls_key_file=str(pki.server_key_file),
    )
    assert message.startswith("WXTOKEN_AMQP_TLS_CERT_FILE/KEY_FILE: cannot load")


def test_an_encrypted_key_is_refused_without_a_prompt(
    monkeypatch: pytest.MonkeyPatch, pki: Pki, tmp_path: Path
) -> None:
    """An encrypted private key is a clear error; OpenSSL never prompts for a pass phrase."""
    encrypted = tmp_path / "encrypted.key"
    key = serialization.load_pem_private_key(pki.client_key_file.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"pass phrase"),
        )
    )
    message = config_error(
        monkeypatch,
        redis_url=REDISS,
        redis_tls_cert_file=str(pki.client_cert_file),
        redis_tls_key_file=str(encrypted),
    )
    assert "encrypted" in message
    assert message.startswith("WXTOKEN_REDIS_TLS_CERT_FILE/KEY_FILE")


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("redis_url", "rediss://cache.internal:6380/0?ssl_cert_reqs=none"),
        ("redis_url", "rediss://cache.internal:6380/0?SSL_CHECK_HOSTNAME=false"),
        ("amqp_url", "amqps://u:p@mq1.internal/%2F?ssl_options=%7B%7D"),
    ],
)
def test_tls_is_never_set_in_the_url(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    """`ssl*` query parameters, which could turn verification off, are refused."""
    message = config_error(monkeypatch, **{variable: value})
    assert message.startswith(f"WXTOKEN_{variable.upper()}: ")
    assert "no ssl* URL parameters" in message


def test_the_producer_settings_check_tls_too(monkeypatch: pytest.MonkeyPatch, pki: Pki) -> None:
    """The producer inherits the checks: a TLS file with a redis:// URL stops it at startup."""
    monkeypatch.setenv("WXTOKEN_APPS_FILE", str(pki.ca_file))
    monkeypatch.setenv("WXTOKEN_REDIS_TLS_CA_FILE", str(pki.ca_file))
    with pytest.raises(ConfigError, match=r"^WXTOKEN_REDIS_TLS_CA_FILE is set but"):
        load_settings(ProducerSettings)


# ------------------------------------------------------------------ redis-py options
def test_a_rediss_client_verifies_with_the_configured_files(pki: Pki) -> None:
    """`rediss://` with TLS files gives an SSL pool that requires a certificate valid for
    the host, trusting the CA file and presenting the client certificate."""
    tls = TlsFiles(pki.ca_file, pki.client_cert_file, pki.client_key_file)
    client = connect_redis(REDISS, timeout_s=0.5, tls=tls)
    try:
        pool = client.connection_pool
        assert pool.connection_class is SSLConnection
        kwargs = pool.connection_kwargs
        assert kwargs["ssl_cert_reqs"] == "required"
        assert kwargs["ssl_check_hostname"] is True
        assert kwargs["ssl_ca_certs"] == str(pki.ca_file)
        assert kwargs["ssl_certfile"] == str(pki.client_cert_file)
        assert kwargs["ssl_keyfile"] == str(pki.client_key_file)
        assert kwargs["socket_timeout"] == 0.5
        assert callable(kwargs["ssl_password"])  # never an interactive prompt
    finally:
        client.close()


def test_a_rediss_client_without_files_still_verifies() -> None:
    """Without TLS files, `rediss://` still requires a valid certificate (system CAs)."""
    client = connect_redis(REDISS)
    try:
        kwargs = client.connection_pool.connection_kwargs
        assert kwargs["ssl_cert_reqs"] == "required"
        assert kwargs["ssl_check_hostname"] is True
        assert kwargs["ssl_ca_certs"] is None
        assert kwargs["ssl_certfile"] is None
    finally:
        client.close()


def test_url_parameters_cannot_turn_verification_off() -> None:
    """Even past the settings, a query that says `ssl_cert_reqs=none` does not win."""
    url = f"{REDISS}?ssl_cert_reqs=none&ssl_check_hostname=false"
    client = connect_redis(url)
    try:
        kwargs = client.connection_pool.connection_kwargs
        assert kwargs["ssl_cert_reqs"] == "required"
        assert kwargs["ssl_check_hostname"] is True
    finally:
        client.close()


def test_a_tls_sentinel_master_gets_the_same_options(pki: Pki) -> None:
    """`rediss+sentinel://` passes the CA, client certificate and verification to the
    master connections (the sentinels themselves are asked in plaintext)."""
    tls = TlsFiles(pki.ca_file, pki.client_cert_file, pki.client_key_file)
    client = connect_redis("rediss+sentinel://s1:26379/wxm", tls=tls)
    try:
        pool = client.connection_pool
        assert pool.connection_class is SentinelManagedSSLConnection
        kwargs = pool.connection_kwargs
        assert kwargs["ssl_cert_reqs"] == "required"
        assert kwargs["ssl_check_hostname"] is True
        assert kwargs["ssl_ca_certs"] == str(pki.ca_file)
        assert kwargs["ssl_keyfile"] == str(pki.client_key_file)
    finally:
        client.close()


@pytest.mark.parametrize("url", ["redis://127.0.0.1:6390/0", "redis+sentinel://s1/wxm"])
def test_tls_files_with_a_plain_redis_url_are_a_value_error(url: str, pki: Pki) -> None:
    """`connect_redis` never ignores TLS files: with a plaintext URL they are an error."""
    with pytest.raises(ValueError, match="not rediss"):
        connect_redis(url, tls=TlsFiles(ca_file=pki.ca_file))


def test_a_plain_redis_client_has_no_tls_options() -> None:
    """`redis://` without `tls` builds the same plain client as before."""
    client = connect_redis("redis://127.0.0.1:6390/0")
    try:
        assert not any(k.startswith("ssl") for k in client.connection_pool.connection_kwargs)
        assert client.connection_pool.connection_class is not SSLConnection
    finally:
        client.close()


# ------------------------------------------------------------------ pika options
def _context_of(params: pika.URLParameters) -> ssl.SSLContext:
    options = params.ssl_options
    assert isinstance(options, pika.SSLOptions)
    context = options.context
    assert isinstance(context, ssl.SSLContext)
    return context


def _trusted_names(context: ssl.SSLContext) -> list[str]:
    """The common names of the CA certificates `context` loaded from files."""
    names: list[str] = []
    for ca in context.get_ca_certs():
        subject: Any = ca.get("subject", ())
        names.extend(value for rdn in subject for key, value in rdn if key == "commonName")
    return names


def test_amqps_parameters_verify_the_broker(pki: Pki) -> None:
    """Each `amqps://` URL gets a context that requires a certificate valid for its own host,
    trusting the configured CA (plus the system's) and carrying the client certificate."""
    tls = TlsFiles(pki.ca_file, pki.client_cert_file, pki.client_key_file)
    params = connection_parameters(
        f"{AMQPS},amqps://u:p@mq2.internal:5671/%2F", connection_name="svc", tls=tls
    )
    assert [p.ssl_options.server_hostname for p in params] == ["mq1.internal", "mq2.internal"]
    for each in params:
        context = _context_of(each)
        assert context.verify_mode == ssl.CERT_REQUIRED
        assert context.check_hostname is True
        assert "wxtoken test CA" in _trusted_names(context)
        assert each.port == 5671


def test_amqps_without_files_still_verifies() -> None:
    """Without TLS files an `amqps://` URL verifies against the system CAs and the host."""
    (params,) = connection_parameters(AMQPS, connection_name="svc")
    context = _context_of(params)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is True
    assert params.ssl_options.server_hostname == "mq1.internal"


def test_amqps_ssl_options_in_the_url_are_replaced(pki: Pki) -> None:
    """pika's `ssl_options` query parameter (its own context, another host name to check)
    never replaces our verifying context."""
    theirs = quote(repr({"cafile": str(pki.other_ca_file), "server_hostname": "elsewhere"}))
    (params,) = connection_parameters(f"{AMQPS}?ssl_options={theirs}", connection_name="svc")
    context = _context_of(params)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is True
    assert params.ssl_options.server_hostname == "mq1.internal"
    assert "wxtoken unrelated CA" not in _trusted_names(context)


def test_plain_amqp_parameters_have_no_tls() -> None:
    """`amqp://` without `tls` is unchanged: no `ssl_options`."""
    (params,) = connection_parameters("amqp://u:p@mq1.internal/%2F", connection_name="svc")
    assert params.ssl_options is None


def test_tls_files_with_a_plain_amqp_url_are_a_broker_error(pki: Pki) -> None:
    """`connection_parameters` refuses TLS files for an `amqp://` URL in the list, naming it."""
    with pytest.raises(BrokerError, match=r"AMQP URL 2 of 2: TLS files are set") as info:
        connection_parameters(
            f"{AMQPS},amqp://u:secret@mq2.internal/%2F",
            connection_name="svc",
            tls=TlsFiles(ca_file=pki.ca_file),
        )
    assert "secret" not in str(info.value)


def test_a_tls_context_needs_cert_and_key_together(pki: Pki) -> None:
    """`tls_context` refuses half a client certificate even when settings were bypassed."""
    with pytest.raises(ValueError, match="both the cert and the key"):
        tls_context(TlsFiles(cert_file=pki.client_cert_file))
