"""What every `wxtoken` command works with: the `OpsContext`, the broker channels, helpers.

Tests inject an `OpsContext` with fake clients as the click `obj`.
"""

from __future__ import annotations

import getpass
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import click
import pika
import pika.exceptions
import redis

from consumer_lib.amqp.params import (
    AMQP_ERRORS,
    close_quietly,
    connection_parameters,
    describe_amqp_error,
)
from consumer_lib.errors import BrokerError, InvalidUpdate
from consumer_lib.settings import CommonSettings, load_settings
from consumer_lib.snapshot import SnapshotReader, connect_redis
from consumer_lib.wire.keys import KeyLayout
from consumer_lib.wire.refresh_request import (
    RefreshRequest,
    declare_requests_exchange,
    publish_request,
)
from consumer_lib.wire.signing import UpdateCodec, codec_from_settings
from consumer_lib.wire.update import TokenKind, TokenUpdate
from producer.audit import AuditLog
from producer.publishing import declare_exchange, publish_update

from .. import _format

_MAX_STDIN_CHARS = 64 * 1024  # more than this is not a token; stop reading
KINDS = click.Choice([kind.value for kind in TokenKind])


class CliError(click.ClickException):
    """An expected runtime failure: one `Error: ...` line on stderr, exit 1."""


class BadConfig(CliError):
    """A setting is missing or malformed: one line on stderr, exit 2."""

    exit_code = 2


#: Publishes one update (with `now_s`) on a confirming channel; raises `BrokerError`.
Publish = Callable[[TokenUpdate, float], None]
#: Opens the broker for (settings, sender name) and declares the exchange; `BrokerError`.
PublisherFactory = Callable[[CommonSettings, str], AbstractContextManager[Publish]]
#: Publishes one refresh request (with `now_s`) on a confirming channel; `BrokerError`.
SendRequest = Callable[[RefreshRequest, float], None]
#: Opens the broker and declares the requests exchange; `BrokerError`.
RequesterFactory = Callable[[CommonSettings, str], AbstractContextManager[SendRequest]]


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


def _operator() -> str:
    """`ops:<os user>@<host>`, the producer_id of an override."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry for our uid, as in some containers
        user = f"uid{os.getuid()}"
    return f"ops:{user}@{socket.gethostname()}"[:128]


@dataclass
class OpsContext:
    """What the commands work with; tests pass one in, else real clients are built lazily."""

    settings: CommonSettings | None = None
    redis_client: redis.Redis | None = None
    publisher: PublisherFactory | None = None
    requester: RequesterFactory | None = None
    clock: Callable[[], float] = time.time
    operator: str = field(default_factory=_operator)
    _own_redis: bool = field(default=False, repr=False)

    def get_settings(self) -> CommonSettings:
        """The settings, read from the environment once; raises `ConfigError`."""
        if self.settings is None:
            self.settings = load_settings(CommonSettings)
        return self.settings

    def codec(self, *, must_sign: bool = False) -> UpdateCodec:
        """Signs (`set`) and verifies (everything read) per the settings; `ConfigError`."""
        return codec_from_settings(self.get_settings(), must_sign=must_sign)

    def stored_update(self, app_id: str, kind: TokenKind) -> TokenUpdate:
        """The verified update Redis holds; none, or an invalid one, is a one-line error."""
        reader = SnapshotReader(self.get_redis(), self.keys(), self.codec())
        try:
            update = reader.read(app_id, kind)
        except InvalidUpdate as exc:
            raise CliError(f"Redis holds an invalid value for {app_id}/{kind}: {exc}") from None
        if update is None:
            raise CliError(f"no token stored for {app_id}/{kind} (never written, or expired)")
        return update

    def keys(self) -> KeyLayout:
        return KeyLayout(self.get_settings().key_prefix)

    def get_redis(self) -> redis.Redis:
        if self.redis_client is None:
            settings = self.get_settings()
            self.redis_client = connect_redis(
                settings.redis_url, timeout_s=settings.redis_timeout_s, tls=settings.redis_tls
            )
            self._own_redis = True
        return self.redis_client

    def open_publisher(self) -> AbstractContextManager[Publish]:
        factory: PublisherFactory = self.publisher or broker_channel
        return factory(self.get_settings(), f"wxtoken-ops/{self.operator}")

    def open_requester(self) -> AbstractContextManager[SendRequest]:
        factory: RequesterFactory = self.requester or requests_channel
        return factory(self.get_settings(), f"wxtoken-ops/{self.operator}")

    def close(self) -> None:
        if self._own_redis and self.redis_client is not None:
            self.redis_client.close()


def checked(check: Callable[[str], str]) -> Callable[[click.Context, click.Parameter, Any], Any]:
    """A click callback running `check` on the value; its ValueError is a usage error."""

    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        try:
            return None if value is None else check(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc), ctx, param) from None

    return callback


def read_token() -> str:
    """The token from standard input (a hidden prompt on a terminal), checked, never echoed."""
    if sys.stdin is not None and sys.stdin.isatty():
        raw: str = click.prompt("Token", hide_input=True, err=True)
    else:
        raw = sys.stdin.read(_MAX_STDIN_CHARS) if sys.stdin is not None else ""
    try:
        return _format.check_token(raw)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


def emit(line: str, *, err: bool = False) -> None:
    """Echo one line and flush at once (stdout may be a pipe read line by line)."""
    click.echo(line, err=err)
    (sys.stderr if err else sys.stdout).flush()


def audit_log(obj: OpsContext) -> AuditLog:
    """The audit trail under the configured prefix; recording never raises."""
    return AuditLog(obj.get_redis(), obj.keys(), clock=obj.clock)
