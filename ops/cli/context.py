"""What every `wxtoken` command works with: the `OpsContext`, the broker channels, helpers.

Tests inject an `OpsContext` with fake clients as the click `obj`.
"""

from __future__ import annotations

import getpass
import os
import socket
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import click
import redis

from consumer_lib.errors import InvalidUpdate
from consumer_lib.settings import DOTENV, CommonSettings, load_settings
from consumer_lib.snapshot import SnapshotReader, connect_redis
from consumer_lib.wire.keys import KeyLayout
from consumer_lib.wire.refresh_request import (
    safe_requester,
)
from consumer_lib.wire.signing import UpdateCodec, codec_from_settings
from consumer_lib.wire.update import TokenKind, TokenUpdate
from producer.store.audit import AuditLog

from .. import _format
from ..broker import (
    ControllerFactory,
    Publish,
    PublisherFactory,
    RequesterFactory,
    SendRequest,
    broker_channel,
    requests_channel,
)

_MAX_STDIN_CHARS = 64 * 1024  # more than this is not a token; stop reading


class KindParam(click.ParamType[TokenKind, object]):
    """A credential kind: its wire value (``jsapi_ticket``) or ticket name (``jsapi``)."""

    name = "kind"

    def get_metavar(self, param: click.Parameter, ctx: click.Context) -> str:
        return "[" + "|".join(kind.value for kind in TokenKind) + "]"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> TokenKind:
        try:
            return TokenKind.parse(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


KINDS = KindParam()


class CliError(click.ClickException):
    """An expected runtime failure: one `Error: ...` line on stderr, exit 1."""


class BadConfig(CliError):
    """A setting is missing or malformed: one line on stderr, exit 2."""

    exit_code = 2


def _operator() -> str:
    """`ops:<os user>@<host>`, the producer_id of an override."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry for our uid, as in some containers
        user = f"uid{os.getuid()}"
    return safe_requester(f"ops:{user}@{socket.gethostname()}")


@dataclass
class OpsContext:
    """What the commands work with; tests pass one in, else real clients are built lazily."""

    settings: CommonSettings | None = None
    redis_client: redis.Redis | None = None
    publisher: PublisherFactory | None = None
    requester: RequesterFactory | None = None
    controller: ControllerFactory | None = None
    clock: Callable[[], float] = time.time
    #: How commands that wait for an answer pause between looks (`quota clear`).
    sleep: Callable[[float], None] = time.sleep
    operator: str = field(default_factory=_operator)
    _own_redis: bool = field(default=False, repr=False)

    def get_settings(self) -> CommonSettings:
        """The settings, read from the environment once; raises `ConfigError`."""
        if self.settings is None:
            self.settings = load_settings(CommonSettings, DOTENV)
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
