"""The ops tools' broker side, without click: a blocking connection, a confirming channel
on the updates exchange (`broker_channel`, what `wxtoken set` and the gateway's overrides
publish through) and one on the requests exchange (`requests_channel`). Every pika failure
becomes a `BrokerError` that names no credentials."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any
from urllib.parse import urlsplit

import pika

from consumer_lib.amqp.params import (
    AMQP_ERRORS,
    close_quietly,
    connection_parameters,
    describe_amqp_error,
)
from consumer_lib.errors import BrokerError
from consumer_lib.settings import CommonSettings
from consumer_lib.wire.refresh_request import (
    RefreshRequest,
    declare_requests_exchange,
    publish_request,
)
from consumer_lib.wire.signing import codec_from_settings
from consumer_lib.wire.update import TokenUpdate
from producer.publishing import declare_exchange, publish_update

#: Publishes one update (with `now_s`) on a confirming channel; raises `BrokerError`.
Publish = Callable[[TokenUpdate, float], None]
#: Opens the broker for (settings, sender name) and declares the exchange; `BrokerError`.
PublisherFactory = Callable[[CommonSettings, str], AbstractContextManager[Publish]]
#: Publishes one refresh request (with `now_s`) on a confirming channel; `BrokerError`.
SendRequest = Callable[[RefreshRequest, float], None]
#: Opens the broker and declares the requests exchange; `BrokerError`.
RequesterFactory = Callable[[CommonSettings, str], AbstractContextManager[SendRequest]]
#: Publishes one sealed control request (with `now_s`) on the requests exchange; `BrokerError`.
SendControl = Callable[[bytes, float], None]
#: Opens the broker for control requests (see `ops.cli.quota.control_channel`).
ControllerFactory = Callable[[CommonSettings, str], AbstractContextManager[SendControl]]


def connect(settings: CommonSettings, sender: str) -> Any:
    """A blocking pika connection; any failure is a `BrokerError` (naming no credentials)."""
    params = connection_parameters(settings.amqp_url, connection_name=sender, tls=settings.amqp_tls)
    try:
        return pika.BlockingConnection(params)
    except AMQP_ERRORS as exc:
        url = urlsplit(settings.amqp_url)
        where = f"{url.hostname}:{url.port or 5672}"
        raise BrokerError(f"cannot reach RabbitMQ at {where}: {describe_amqp_error(exc)}") from None


@contextmanager
def broker_channel(settings: CommonSettings, sender: str) -> Iterator[Publish]:
    """Connect, open a confirming channel and declare the exchange, then yield `publish`."""
    codec = codec_from_settings(settings, must_sign=True)
    exchange = settings.exchange
    connection = connect(settings, sender)
    try:
        try:
            channel = connection.channel()
            channel.confirm_delivery()
            declare_exchange(channel, exchange)
        except AMQP_ERRORS as exc:
            raise BrokerError(f"declaring {exchange}: {describe_amqp_error(exc)}") from None

        def publish(update: TokenUpdate, now_s: float) -> None:
            try:
                publish_update(channel, exchange, update, now_s=now_s, sender=sender, codec=codec)
            except AMQP_ERRORS as exc:
                raise BrokerError(f"publishing to {exchange}: {describe_amqp_error(exc)}") from None

        yield publish
    finally:
        close_quietly(connection)


@contextmanager
def requests_channel(settings: CommonSettings, sender: str) -> Iterator[SendRequest]:
    """Like `broker_channel`, for the requests exchange: yields `send(request, now_s)`."""
    connection = connect(settings, sender)
    try:
        try:
            channel = connection.channel()
            channel.confirm_delivery()
            declare_requests_exchange(channel, settings.exchange)

            def send(request: RefreshRequest, now_s: float) -> None:
                publish_request(channel, settings.exchange, request, sender=sender, now_s=now_s)

            yield send
        except AMQP_ERRORS as exc:
            raise BrokerError(f"requesting a refresh: {describe_amqp_error(exc)}") from None
    finally:
        close_quietly(connection)
