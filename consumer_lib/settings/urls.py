"""Parsing and checking the Redis and broker URLs of the settings.

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

Parts redis-py or pika would silently drop (a path that is not a database number, unknown
or empty query options, a #fragment, a second vhost segment) are refused: `url_parts`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated
from urllib.parse import SplitResult, parse_qsl, unquote, urlsplit

from pydantic import AfterValidator, Field

from .loading import ENV_PREFIX
from .url_parts import check_amqp_parts, check_redis_parts

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


def wanted_schemes(schemes: tuple[str, ...]) -> str:
    """`amqp://, amqps://`: the schemes as a message lists them."""
    return ", ".join(f"{s}://" for s in schemes)


def _url_with_scheme(*schemes: str) -> Callable[[str], str]:
    """A validator accepting URLs of `schemes` with a host (but unix://) and a numeric port."""

    def check(url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in schemes:
            raise ValueError(
                f"scheme must be one of {wanted_schemes(schemes)}, got {parts.scheme!r}"
            )
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
        raise ValueError(f"scheme must be one of {wanted_schemes(SENTINEL_SCHEMES)}")
    if parts.query or parts.fragment:
        raise ValueError("a sentinel URL takes no ?query or #fragment")
    sentinels = _sentinel_hosts(parts.netloc.rpartition("@")[2])
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
        sentinels=sentinels,
        service=service,
        db=db,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        tls=parts.scheme == "rediss+sentinel",
    )


def _sentinel_hosts(hostlist: str) -> tuple[tuple[str, int], ...]:
    """The (host, port) pairs of a sentinel URL's comma-separated host list."""
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
    return tuple(sentinels)


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
        wanted = wanted_schemes(REDIS_SCHEMES + SENTINEL_SCHEMES)
        raise ValueError(f"scheme must be one of {wanted}, got {scheme!r}")
    check_redis_parts(url)
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
            check_amqp_parts(url)
        except ValueError as exc:
            raise ValueError(f"{where}{exc}") from None
    return value


RedisUrl = Annotated[str, AfterValidator(_check_redis_url)]
#: One AMQP URL, or several separated by commas (the nodes of a cluster, in order).
AmqpUrl = Annotated[str, AfterValidator(_check_amqp_urls)]
ExchangeName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,200}$")]
KeyPrefix = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
