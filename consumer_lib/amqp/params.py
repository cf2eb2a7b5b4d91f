"""RabbitMQ plumbing shared by publisher and subscriber: connection parameters, the
exchange, and the set of pika exceptions that mean "the broker is away, reconnect".

An AMQP URL setting may name several brokers (the nodes of a cluster), separated by
commas. `connection_parameters()` returns one parameter set per URL, in the given order,
and `pika.BlockingConnection(list)` tries them in that order on every (re)connect, so the
first node is preferred and the others take over while it is away.

Every `amqps://` URL gets our own `ssl.SSLContext` (`settings.tls_context`): the broker's
certificate must verify against the system's CAs plus the configured CA file, for the host
name in that URL, and the client certificate is presented when one is configured. pika's
own `ssl_options` from the URL are never used, so nothing can turn verification off.
"""

from __future__ import annotations

import logging
from urllib.parse import unquote, urlsplit

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel

from ..errors import BrokerError
from ..settings import AMQP_TLS_SCHEMES, TlsFiles, split_urls, tls_context

log = logging.getLogger(__name__)

#: Everything pika raises when a connection or channel is lost or refused.
AMQP_ERRORS: tuple[type[Exception], ...] = (pika.exceptions.AMQPError, OSError)

#: The fanout exchange carries `TokenUpdate` JSON; `type` names the contract.
MESSAGE_TYPE = "wxtoken.update.v1"


def connection_parameters(
    url: str,
    *,
    connection_name: str,
    heartbeat_s: int = 30,
    timeout_s: float = 5.0,
    tls: TlsFiles | None = None,
) -> list[pika.URLParameters]:
    """One parameter set per comma-separated URL in `url`, in order, each with the same
    explicit heartbeat, timeouts, connection name and a single attempt (pika moves on to
    the next URL, and our callers back off before trying the list again).

    `amqps://` URLs verify the broker's certificate (see the module docstring), with the
    CA and client certificate files of `tls` (from `settings.amqp_tls`) when given; `tls`
    with a plain `amqp://` URL is a `BrokerError`, never a silent plaintext connection.
    """
    urls = split_urls(url)
    params = []
    schemes = []
    for n, one in enumerate(urls, 1):
        where = f"AMQP URL {n} of {len(urls)}" if len(urls) > 1 else "AMQP URL"
        if not one:
            raise BrokerError(f"bad {where}: empty (broker URLs are separated by single commas)")
        try:
            urlsplit(one).port  # noqa: B018 - raises on a bad port, whose text we never echo
        except ValueError:
            raise BrokerError(f"bad {where}: bad host or port") from None
        scheme = urlsplit(one).scheme.lower()
        if tls is not None and scheme not in AMQP_TLS_SCHEMES:
            raise BrokerError(f"bad {where}: TLS files are set, but the URL is not amqps://")
        schemes.append(scheme)
        try:
            params.append(pika.URLParameters(one))
        except (ValueError, TypeError) as exc:
            raise BrokerError(f"bad {where}: {_redacted(str(exc), one)}") from None
    if any(scheme in AMQP_TLS_SCHEMES for scheme in schemes):
        try:
            context = tls_context(tls)  # one context serves every connection
        except ValueError as exc:
            raise BrokerError(f"AMQP TLS files: {exc}") from None
        for each, scheme in zip(params, schemes, strict=True):
            if scheme in AMQP_TLS_SCHEMES:
                each.ssl_options = pika.SSLOptions(context, server_hostname=each.host)
    for each in params:
        each.heartbeat = heartbeat_s
        each.blocked_connection_timeout = timeout_s * 6
        each.socket_timeout = timeout_s
        each.stack_timeout = timeout_s * 2
        each.connection_attempts = 1
        each.client_properties = {"connection_name": connection_name}
    return params


def _redacted(text: str, url: str) -> str:
    """`text` with the password of `url` (as written and decoded) replaced by `***`."""
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    if not password:
        return text
    for secret in sorted({password, unquote(password)}, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def describe_amqp_error(exc: BaseException) -> str:
    """A short description of a pika failure (pika's messages carry no secrets)."""
    name = exc.__class__.__name__
    text = str(exc) or name
    if not text.startswith(name):
        text = f"{name}: {text}"
    return text.splitlines()[0][:200]


def close_quietly(connection: pika.BlockingConnection | None) -> None:
    """Close `connection` if it is open; a broker already gone is not an error here."""
    if connection is None or not connection.is_open:
        return
    try:
        connection.close()
    except AMQP_ERRORS as exc:
        log.debug("closing broker connection: %s", describe_amqp_error(exc))


def amqp_user_id(channel: BlockingChannel) -> str | None:
    """The user name the channel's connection logged in with, for the `user_id` property.

    Taken from the connection parameters pika actually connected with (with several broker
    URLs, the one that answered), already URL-decoded by pika. RabbitMQ refuses a message
    whose `user_id` is not the connection's user (406 PRECONDITION_FAILED), so a receiver
    can trust it. None when unknown: not a pika channel, or no user name and password
    (EXTERNAL login with a client certificate), in which case the property is left out.
    """
    connection = getattr(channel, "connection", None)
    params = getattr(getattr(connection, "_impl", None), "params", None)
    credentials = getattr(params, "credentials", None)
    if not isinstance(credentials, pika.PlainCredentials):
        return None
    username = credentials.username
    return username if isinstance(username, str) and username else None
