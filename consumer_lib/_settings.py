"""Typed settings read once at an entry point from `WXTOKEN_*` variables (or a `.env` file).

`load_settings()` turns pydantic's validation errors into one `ConfigError` line that
names the variable and what is wrong, so programs can print it and exit without a traceback.
No message ever repeats a URL, so a password in one cannot leak into an error or a log.

`WXTOKEN_AMQP_URL` is one broker URL or several separated by commas, one per node of a
RabbitMQ cluster, tried in the order given (the first is preferred):

    amqp://user:pass@mq1:5672/%2F,amqp://user:pass@mq2:5672/%2F

A comma inside one URL (a query value, a password) must be percent-encoded as `%2C`.

`WXTOKEN_REDIS_URL` is a plain `redis://`, `rediss://` or `unix://` URL, or names a master
watched by Redis Sentinel:

    redis+sentinel://[user:pass@]host1:26379,host2:26379/SERVICE_NAME[/DB]
    rediss+sentinel://...    the same, with TLS to the master (not to the sentinels)

The sentinels (port 26379 when omitted) are asked for the current master of SERVICE_NAME;
`user:pass` authenticate to that master (and its replicas), the sentinels themselves are
asked without credentials. DB defaults to 0.

TLS: a `rediss://` (or `rediss+sentinel://`) Redis URL and `amqps://` broker URLs always
verify the server's certificate chain and host name; there is no setting to turn that off.
The CAs trusted are the system's plus the PEM bundle in `WXTOKEN_REDIS_TLS_CA_FILE` /
`WXTOKEN_AMQP_TLS_CA_FILE`; a client certificate is `..._TLS_CERT_FILE` with its
(unencrypted) `..._TLS_KEY_FILE`. The files are checked at startup: each must be a readable
file, cert and key come together, they must load, and a TLS option next to a plain
`redis://` or `amqp://` URL is an error rather than a silent plaintext connection.
TLS is never configured in the URLs themselves (`ssl_*` query parameters are rejected).
"""

from __future__ import annotations

import os
import re
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Self, TypeVar
from urllib.parse import SplitResult, parse_qsl, unquote, urlsplit

from pydantic import AfterValidator, BeforeValidator, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ._errors import ConfigError

ENV_PREFIX = "WXTOKEN_"

REDIS_SCHEMES = ("redis", "rediss", "unix")
SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
AMQP_SCHEMES = ("amqp", "amqps")
#: The URL schemes that mean TLS; TLS file options need one of them.
REDIS_TLS_SCHEMES = ("rediss", "rediss+sentinel")
AMQP_TLS_SCHEMES = ("amqps",)
DEFAULT_SENTINEL_PORT = 26379

#: Said of a port that is not a number in 1..65535; the port's text is never repeated,
#: since a password with an unencoded `/` or `#` in it would end up there.
_BAD_PORT = "bad port (must be a number from 1 to 65535)"
_SERVICE_NAME = re.compile(r"^[^\s/]{1,256}$")


def _port_of(parts: SplitResult) -> int | None:
    """The URL's port, None when absent; a `ValueError` that echoes nothing when bad."""
    try:
        port = parts.port
    except ValueError:
        raise ValueError(_BAD_PORT) from None
    if port == 0:
        raise ValueError(_BAD_PORT)
    return port


def _wanted(schemes: tuple[str, ...]) -> str:
    return ", ".join(f"{s}://" for s in schemes)


def _url_with_scheme(*schemes: str) -> Callable[[str], str]:
    """A validator accepting URLs of `schemes` with a host (but unix://) and a numeric port."""

    def check(url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in schemes:
            raise ValueError(f"scheme must be one of {_wanted(schemes)}, got {parts.scheme!r}")
        if parts.scheme != "unix" and not parts.hostname:
            raise ValueError("no host in URL")
        _port_of(parts)
        return url

    return check


@dataclass(frozen=True)
class SentinelUrl:
    """A parsed `redis+sentinel://` URL; the password stays out of `repr()`."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False


def is_sentinel_url(url: str) -> bool:
    """True for a `redis+sentinel://` or `rediss+sentinel://` URL."""
    return url.split(":", 1)[0].lower() in SENTINEL_SCHEMES


def parse_sentinel_url(url: str) -> SentinelUrl:
    """Parse a sentinel URL (see the module docstring); `ValueError` that echoes nothing."""
    parts = urlsplit(url)
    if parts.scheme not in SENTINEL_SCHEMES:
        raise ValueError(f"scheme must be one of {_wanted(SENTINEL_SCHEMES)}")
    if parts.query or parts.fragment:
        raise ValueError("a sentinel URL takes no ?query or #fragment")
    hostlist = parts.netloc.rpartition("@")[2]
    if not hostlist.strip():
        raise ValueError("no sentinel host:port in URL")
    sentinels = []
    for n, item in enumerate(hostlist.split(","), 1):
        one = urlsplit("//" + item.strip())
        if not one.hostname:
            raise ValueError(f"sentinel {n} in the host list has no host")
        try:
            port = _port_of(one)
        except ValueError as exc:
            raise ValueError(f"sentinel {n} in the host list: {exc}") from None
        sentinels.append((one.hostname, port or DEFAULT_SENTINEL_PORT))
    segments = parts.path.split("/")[1:]
    if segments[-1:] == [""]:
        segments.pop()  # a trailing slash
    if not segments or not segments[0]:
        raise ValueError("no service name: the form is redis+sentinel://host:port/SERVICE[/DB]")
    if len(segments) > 2:
        raise ValueError("too many path parts: the form is .../SERVICE_NAME[/DB]")
    service = unquote(segments[0])
    if not _SERVICE_NAME.match(service):
        raise ValueError("the service name must have no whitespace or slash")
    db = 0
    if len(segments) == 2:
        if not segments[1].isascii() or not segments[1].isdigit():
            raise ValueError("the database after the service name must be a number")
        db = int(segments[1])
    return SentinelUrl(
        sentinels=tuple(sentinels),
        service=service,
        db=db,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        tls=parts.scheme == "rediss+sentinel",
    )


def _no_tls_in_query(url: str, variable: str) -> None:
    """Refuse `ssl*` query parameters: TLS comes from the `*_TLS_*` settings only, so no
    URL can weaken certificate verification."""
    names = {name.lower() for name, _ in parse_qsl(urlsplit(url).query, keep_blank_values=True)}
    if any(name.startswith("ssl") for name in names):
        raise ValueError(
            f"no ssl* URL parameters: TLS is set with the {ENV_PREFIX}{variable}_TLS_* "
            "variables and a rediss:// or amqps:// scheme"
        )


def _check_redis_url(url: str) -> str:
    scheme = urlsplit(url).scheme
    _no_tls_in_query(url, "REDIS")
    if scheme in SENTINEL_SCHEMES:
        parse_sentinel_url(url)
        return url
    if scheme not in REDIS_SCHEMES:
        wanted = _wanted(REDIS_SCHEMES + SENTINEL_SCHEMES)
        raise ValueError(f"scheme must be one of {wanted}, got {scheme!r}")
    return _url_with_scheme(*REDIS_SCHEMES)(url)


def split_urls(value: str) -> list[str]:
    """The comma-separated URLs in `value`, stripped; an empty element stays as ''."""
    return [part.strip() for part in value.split(",")]


_check_amqp_url = _url_with_scheme(*AMQP_SCHEMES)


def _check_amqp_urls(value: str) -> str:
    urls = split_urls(value)
    for n, url in enumerate(urls, 1):
        where = f"URL {n} of {len(urls)}: " if len(urls) > 1 else ""
        if not url:
            raise ValueError(f"{where}empty (broker URLs are separated by single commas)")
        try:
            _check_amqp_url(url)
            _no_tls_in_query(url, "AMQP")
        except ValueError as exc:
            raise ValueError(f"{where}{exc}") from None
    return value


RedisUrl = Annotated[str, AfterValidator(_check_redis_url)]
#: One AMQP URL, or several separated by commas (the nodes of a cluster, in order).
AmqpUrl = Annotated[str, AfterValidator(_check_amqp_urls)]
ExchangeName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,200}$")]
KeyPrefix = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]


@dataclass(frozen=True)
class TlsFiles:
    """The files of one TLS client: extra trusted CAs, and an optional client certificate.

    `cert_file` and `key_file` come together. Built by `CommonSettings.redis_tls` and
    `.amqp_tls` from validated settings; server certificates are always verified.
    """

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None


def refuse_key_password() -> bytes:
    """The password callback for private keys: encrypted keys are not supported, and
    without a callback OpenSSL would prompt on the terminal and hang a service."""
    raise ValueError("the private key is encrypted (only unencrypted PEM keys are supported)")


def tls_context(tls: TlsFiles | None) -> ssl.SSLContext:
    """A client `SSLContext` that requires a valid server certificate for the host name.

    It trusts the system's CAs plus `tls.ca_file` (as redis-py does) and presents
    `tls.cert_file`/`tls.key_file` when given. Raises `ValueError` (naming no secret)
    when a file does not load.
    """
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.verify_mode = ssl.CERT_REQUIRED
    context.check_hostname = True
    if tls is None:
        return context
    if tls.ca_file is not None:
        try:
            context.load_verify_locations(cafile=str(tls.ca_file))
        except (ssl.SSLError, OSError) as exc:
            raise ValueError(f"cannot load the CA file: {_ssl_reason(exc)}") from None
    if (tls.cert_file is None) != (tls.key_file is None):
        raise ValueError("a client certificate needs both the cert and the key file")
    if tls.cert_file is not None and tls.key_file is not None:
        try:
            context.load_cert_chain(
                str(tls.cert_file), str(tls.key_file), password=refuse_key_password
            )
        except (ssl.SSLError, OSError) as exc:
            raise ValueError(
                f"cannot load the client certificate and key: {_ssl_reason(exc)}"
            ) from None
    return context


def _ssl_reason(exc: BaseException) -> str:
    """`[SSL] PEM lib`, `No such file or directory`: OpenSSL's reason, one short line."""
    if isinstance(exc, ssl.SSLError) and exc.reason:
        text = f"{exc.library or 'SSL'}: {exc.reason}"
    elif isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror
    else:
        text = str(exc) or exc.__class__.__name__
    return text.splitlines()[0][:200]


def _empty_is_none(value: object) -> object:
    """An empty variable (`WXTOKEN_REDIS_TLS_CA_FILE=`) means "not set"."""
    if isinstance(value, str) and not value.strip():
        return None
    return value


def _readable_file(path: Path | None) -> Path | None:
    """`path` when it names a readable regular file; `ValueError` saying what is wrong."""
    if path is None:
        return None
    if not path.exists():
        raise ValueError(f"no such file: {path}")
    if not path.is_file():
        raise ValueError(f"not a regular file: {path}")
    if not os.access(path, os.R_OK):
        raise ValueError(f"not readable by this process: {path}")
    return path


#: An optional path to a readable file (empty means unset).
TlsFile = Annotated[Path | None, BeforeValidator(_empty_is_none), AfterValidator(_readable_file)]


class CommonSettings(BaseSettings):
    """What every part of wxtoken needs to find Redis and RabbitMQ."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_file=".env", extra="ignore", frozen=True
    )

    redis_url: RedisUrl = "redis://127.0.0.1:6379/0"
    amqp_url: AmqpUrl = "amqp://guest:guest@127.0.0.1:5672/%2F"
    exchange: ExchangeName = "wxtoken.tokens"
    #: Every Redis key wxtoken uses starts with this, so several deployments can share a DB.
    key_prefix: KeyPrefix = "wxtoken"
    redis_timeout_s: Annotated[float, Field(gt=0, le=60)] = 2.0
    #: TLS to Redis (a `rediss://` URL): extra CA bundle, client certificate and key (PEM).
    redis_tls_ca_file: TlsFile = None
    redis_tls_cert_file: TlsFile = None
    redis_tls_key_file: TlsFile = None
    #: TLS to RabbitMQ (`amqps://` URLs): the same, for every broker in the list.
    amqp_tls_ca_file: TlsFile = None
    amqp_tls_cert_file: TlsFile = None
    amqp_tls_key_file: TlsFile = None

    @property
    def redis_tls(self) -> TlsFiles | None:
        """The Redis TLS files for `connect_redis(..., tls=)`; None when none are set."""
        return _tls_files(self.redis_tls_ca_file, self.redis_tls_cert_file, self.redis_tls_key_file)

    @property
    def amqp_tls(self) -> TlsFiles | None:
        """The broker TLS files for `connection_parameters(..., tls=)`; None when none are set."""
        return _tls_files(self.amqp_tls_ca_file, self.amqp_tls_cert_file, self.amqp_tls_key_file)

    @model_validator(mode="after")
    def _check_tls(self) -> Self:
        """TLS files only with TLS URLs, cert and key together, and files that load."""
        _check_tls_files(
            "redis",
            self.redis_tls,
            schemes=[urlsplit(self.redis_url).scheme.lower()],
            wanted=REDIS_TLS_SCHEMES,
        )
        _check_tls_files(
            "amqp",
            self.amqp_tls,
            schemes=[urlsplit(one).scheme.lower() for one in split_urls(self.amqp_url)],
            wanted=AMQP_TLS_SCHEMES,
        )
        return self

    #: Ed25519 private key (PEM) that signs updates: the producer's, or an operator's.
    signing_key_file: Path | None = None
    #: Public keys (PEM files, comma-separated) that updates must be signed with.
    verify_keys: str | None = None
    #: Accept unsigned updates (tests, the sandbox demo); a subscriber warns once.
    insecure_accept_unsigned: bool = False

    def verify_key_files(self) -> list[Path]:
        return [Path(p.strip()) for p in (self.verify_keys or "").split(",") if p.strip()]


def _tls_files(ca: Path | None, cert: Path | None, key: Path | None) -> TlsFiles | None:
    if ca is None and cert is None and key is None:
        return None
    return TlsFiles(ca_file=ca, cert_file=cert, key_file=key)


def _check_tls_files(
    service: str, tls: TlsFiles | None, *, schemes: list[str], wanted: tuple[str, ...]
) -> None:
    """Raise `ValueError` with a message that starts with the variable to fix."""
    if tls is None:
        return
    var = f"{ENV_PREFIX}{service.upper()}"
    given = next(
        f"{var}_TLS_{name.upper()}"
        for name in ("ca_file", "cert_file", "key_file")
        if getattr(tls, name) is not None
    )
    if any(scheme not in wanted for scheme in schemes):
        raise ValueError(
            f"{given} is set but {var}_URL is not {_wanted(wanted)} "
            "(TLS options never fall back to a plaintext connection)"
        )
    if tls.cert_file is not None and tls.key_file is None:
        raise ValueError(f"{var}_TLS_CERT_FILE is set without {var}_TLS_KEY_FILE")
    if tls.key_file is not None and tls.cert_file is None:
        raise ValueError(f"{var}_TLS_KEY_FILE is set without {var}_TLS_CERT_FILE")
    try:
        tls_context(tls)
    except ValueError as exc:
        which = "CA_FILE" if "CA file" in str(exc) else "CERT_FILE/KEY_FILE"
        raise ValueError(f"{var}_TLS_{which}: {exc}") from None


class ClientSettings(CommonSettings):
    """Settings of a subscribing service (`TokenClient`); no app secret is ever needed."""

    #: Longest wait between reconnect attempts to the broker (jittered, capped backoff).
    reconnect_max_s: Annotated[float, Field(gt=0, le=300)] = 3.0
    #: How often the snapshot in Redis is polled while the broker is unreachable.
    poll_interval_s: Annotated[float, Field(gt=0, le=300)] = 2.0
    #: AMQP heartbeat; pika's connection thread answers it.
    heartbeat_s: Annotated[int, Field(ge=0, le=600)] = 30
    #: Broker users allowed to publish updates (comma-separated, e.g.
    #: "wxtoken-producer,wxtoken-ops"); empty trusts any user the broker lets publish.
    trusted_publishers: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.@, -]*$")] = ""

    def trusted_publisher_names(self) -> frozenset[str]:
        return frozenset(n.strip() for n in self.trusted_publishers.split(",") if n.strip())


SettingsT = TypeVar("SettingsT", bound=BaseSettings)


def load_settings(cls: type[SettingsT], **overrides: object) -> SettingsT:
    """Build settings from the environment; a bad value raises one-line `ConfigError`."""
    try:
        return cls(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, env_prefix=ENV_PREFIX)) from None


def describe_validation_error(exc: ValidationError, *, env_prefix: str = "") -> str:
    """`WXTOKEN_REDIS_URL: scheme must be ...` for each bad field, joined on one line."""
    parts = []
    for error in exc.errors(include_input=False, include_url=False):
        loc = [str(p) for p in error["loc"]]
        message = error["msg"].removeprefix("Value error, ")
        if not loc and env_prefix and message.startswith(env_prefix):
            parts.append(message)  # a check across settings, naming its variables itself
            continue
        name = (env_prefix + loc[0].upper()) if loc else "settings"
        where = ".".join([name, *loc[1:]])
        parts.append(f"{where}: {message}")
    return "; ".join(parts)
