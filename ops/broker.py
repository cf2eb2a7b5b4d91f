"""The ops tools' broker side, without click: a blocking connection, a confirming channel
on the updates exchange (`broker_channel`, what `wxtoken set` and the gateway's overrides
publish through) and on the requests exchange (`requests_channel` for refresh requests,
`control_channel` for `wxtoken quota clear`'s sealed control requests). Every broker
failure is a `BrokerError` (from `consumer_lib.amqp`) that names no credentials."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from urllib.parse import urlsplit

from consumer_lib.amqp import Channel, Connection, connection_parameters
from consumer_lib.settings import CommonSettings
from consumer_lib.wire.refresh_request import RefreshRequest
from consumer_lib.wire.signing import codec_from_settings
from consumer_lib.wire.update import TokenUpdate

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
#: Opens the broker for control requests (`control_channel`).
ControllerFactory = Callable[[CommonSettings, str], AbstractContextManager[SendControl]]


def connect(settings: CommonSettings, sender: str) -> Connection:
    """A broker connection; any failure is a `BrokerError` (naming no credentials)."""
    params = connection_parameters(settings.amqp_url, connection_name=sender, tls=settings.amqp_tls)
    url = urlsplit(settings.amqp_url)
    return Connection.open(
        params, what=f"cannot reach RabbitMQ at {url.hostname}:{url.port or 5672}"
    )


@contextmanager
def broker_channel(settings: CommonSettings, sender: str) -> Iterator[Publish]:
    """Connect, open a confirming channel and declare the exchange, then yield `publish`."""
    codec = codec_from_settings(settings, must_sign=True)
    exchange = settings.exchange
    connection = connect(settings, sender)
    try:
        channel = connection.channel()
        channel.confirm()
        channel.declare_exchange(exchange)

        def publish(update: TokenUpdate, now_s: float) -> None:
            channel.publish_update(exchange, update, now_s=now_s, sender=sender, codec=codec)

        yield publish
    finally:
        connection.close()


@contextmanager
def _requests_exchange(settings: CommonSettings, sender: str) -> Iterator[Channel]:
    """Connect, open a confirming channel and declare the requests exchange; yield it."""
    connection = connect(settings, sender)
    try:
        channel = connection.channel()
        channel.confirm()
        channel.declare_requests_exchange(settings.exchange)
        yield channel
    finally:
        connection.close()


@contextmanager
def requests_channel(settings: CommonSettings, sender: str) -> Iterator[SendRequest]:
    """Like `broker_channel`, for the requests exchange: yields `send(request, now_s)`."""
    with _requests_exchange(settings, sender) as channel:

        def send(request: RefreshRequest, now_s: float) -> None:
            channel.publish_request(settings.exchange, request, sender=sender, now_s=now_s)

        yield send


@contextmanager
def control_channel(settings: CommonSettings, sender: str) -> Iterator[SendControl]:
    """Like `requests_channel`, for sealed control requests: yields `send(body, now_s)`."""
    with _requests_exchange(settings, sender) as channel:

        def send(body: bytes, now_s: float) -> None:
            channel.publish_control(settings.exchange, body, sender=sender, now_s=now_s)

        yield send
