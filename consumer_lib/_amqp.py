"""RabbitMQ plumbing shared by publisher and subscriber: connection parameters, the
exchange, and the set of pika exceptions that mean "the broker is away, reconnect"."""

from __future__ import annotations

import logging

import pika
import pika.exceptions

from ._errors import BrokerError

log = logging.getLogger(__name__)

#: Everything pika raises when a connection or channel is lost or refused.
AMQP_ERRORS: tuple[type[Exception], ...] = (pika.exceptions.AMQPError, OSError)

#: The fanout exchange carries `TokenUpdate` JSON; `type` names the contract.
MESSAGE_TYPE = "wxtoken.update.v1"


def connection_parameters(
    url: str, *, connection_name: str, heartbeat_s: int = 30, timeout_s: float = 5.0
) -> pika.URLParameters:
    """Parameters for `url` with explicit heartbeat, timeouts and a connection name."""
    try:
        params = pika.URLParameters(url)
    except (ValueError, TypeError) as exc:
        raise BrokerError(f"bad AMQP URL: {exc}") from None
    params.heartbeat = heartbeat_s
    params.blocked_connection_timeout = timeout_s * 6
    params.socket_timeout = timeout_s
    params.stack_timeout = timeout_s * 2
    params.connection_attempts = 1
    params.client_properties = {"connection_name": connection_name}
    return params


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
