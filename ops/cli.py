"""`wxtoken`, the operators' command line: a thin shell over the Redis store and the exchange.

Commands: set (override a token read from stdin), refresh (ask the producers for a new
token), get, status, watch, history (the audit trail), sandbox. Settings come from
`WXTOKEN_*` variables. Bad arguments or settings exit 2, a failing service exits 1; both
print one line on stderr.
Tests inject an `OpsContext` with fake clients as `obj`.
"""

from __future__ import annotations

import getpass
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import urlsplit

import click
import pika
import pika.exceptions
import redis
from pydantic import ValidationError

from consumer_lib._amqp import (
    AMQP_ERRORS,
    close_quietly,
    connection_parameters,
    describe_amqp_error,
)
from consumer_lib._errors import BrokerError, ConfigError, InvalidUpdate, StoreError, WxTokenError
from consumer_lib._keys import KeyLayout
from consumer_lib._model import TokenKind, TokenSource, TokenUpdate
from consumer_lib._redis import SnapshotReader, connect_redis
from consumer_lib._refresh_request import (
    RefreshRequest,
    declare_requests_exchange,
    publish_request,
)
from consumer_lib._settings import CommonSettings, load_settings
from consumer_lib._signing import UpdateCodec, codec_from_settings, generate_keypair
from producer._audit import AuditEvent, AuditLog
from producer._publisher import declare_exchange, publish_update
from producer._store import TokenStore

from . import _format

log = logging.getLogger(__name__)

MAX_EXPIRES_IN_S = 86_400
DEFAULT_SANDBOX_APPS = "wxdemo0000000001:demo-secret-1,wxdemo0000000002:demo-secret-2"
_MAX_STDIN_CHARS = 64 * 1024  # more than this is not a token; stop reading
_KINDS = click.Choice([kind.value for kind in TokenKind])


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


def _connect(settings: CommonSettings, sender: str) -> Any:
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
    connection = _connect(settings, sender)
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
    connection = _connect(settings, sender)
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


class _Group(click.Group):
    """Turns our errors into one line on stderr: exit 2 for configuration, else 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ConfigError as exc:
            raise BadConfig(str(exc)) from None
        except StoreError as exc:
            raise CliError(f"Redis: {exc}") from None
        except WxTokenError as exc:
            raise CliError(str(exc)) from None


def _configure_logging(verbose: int) -> None:
    """WARNING by default, -v INFO, -vv DEBUG; left alone if the process configured it."""
    root = logging.getLogger()
    if root.handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    if verbose < 2:  # pika logs a refused connection with a traceback; we say it in one line
        handler.addFilter(lambda record: not record.name.startswith("pika."))
    root.addHandler(handler)
    root.setLevel(max(logging.DEBUG, logging.WARNING - 10 * verbose))


@click.group(cls=_Group)
@click.option("-v", "--verbose", count=True, help="Log more: -v for INFO, -vv for DEBUG.")
@click.pass_context
def main(ctx: click.Context, verbose: int) -> None:
    """Operate wxtoken: override, inspect and watch WeChat tokens; run the sandbox."""
    _configure_logging(verbose)
    if ctx.obj is None:
        ctx.obj = OpsContext()
    if not isinstance(ctx.obj, OpsContext):
        raise TypeError(f"context object must be an OpsContext, not {type(ctx.obj).__name__}")
    ctx.call_on_close(ctx.obj.close)


def _checked(check: Callable[[str], str]) -> Callable[[click.Context, click.Parameter, Any], Any]:
    """A click callback running `check` on the value; its ValueError is a usage error."""

    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        try:
            return None if value is None else check(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc), ctx, param) from None

    return callback


def _read_token() -> str:
    """The token from standard input (a hidden prompt on a terminal), checked, never echoed."""
    if sys.stdin is not None and sys.stdin.isatty():
        raw: str = click.prompt("Token", hide_input=True, err=True)
    else:
        raw = sys.stdin.read(_MAX_STDIN_CHARS) if sys.stdin is not None else ""
    try:
        return _format.check_token(raw)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


def _emit(line: str, *, err: bool = False) -> None:
    """Echo one line and flush at once (stdout may be a pipe read line by line)."""
    click.echo(line, err=err)
    (sys.stderr if err else sys.stdout).flush()


@main.command("set")
@click.argument("app_id", callback=_checked(_format.check_app_id))
@click.option(
    "--expires-in",
    type=click.IntRange(1, MAX_EXPIRES_IN_S),
    required=True,
    metavar="SECONDS",
    help="Seconds the token stays valid from now (1..86400).",
)
@click.option("--kind", type=_KINDS, default=TokenKind.ACCESS_TOKEN.value, show_default=True)
@click.option(
    "--reason", callback=_checked(_format.check_reason), help="Why; stored and published with it."
)
@click.option("--allow-new-app", is_flag=True, help="Accept an app Redis has never held.")
@click.pass_obj
def set_token(
    obj: OpsContext,
    app_id: str,
    expires_in: int,
    kind: str,
    reason: str | None,
    allow_new_app: bool,
) -> None:
    """Store and publish a token read from stdin.

    For a token obtained elsewhere: standard input keeps it out of shell history and `ps`
    (on a terminal it is prompted for, hidden). The broker is reached before anything is
    written, so a failure leaves nothing half-done.
    """
    token = _read_token()
    token_kind = TokenKind(kind)
    store = TokenStore(obj.get_redis(), obj.keys(), obj.codec(must_sign=True))
    if not allow_new_app and (app_id, token_kind) not in store.reader.known():
        raise click.UsageError(
            f"Redis has never held {app_id}/{kind} under prefix {obj.keys().prefix!r}; "
            "check the app id, or pass --allow-new-app to introduce it"
        )
    with obj.open_publisher() as publish:
        now_s = obj.clock()
        try:
            version = store.next_version(app_id, token_kind, now_s=now_s)
            update = TokenUpdate(
                app_id=app_id,
                kind=token_kind,
                value=token,
                issued_at=now_s,
                expires_at=now_s + expires_in,
                version=version,
                source=TokenSource.OVERRIDE,
                producer_id=obj.operator,
                reason=reason,
            )
            result = store.write(update)
        except StoreError as exc:
            raise CliError(f"Redis: {exc}; nothing was published") from None
        except ValidationError as exc:  # our checks above should make this unreachable
            problems = "; ".join(e["msg"] for e in exc.errors(include_input=False))
            raise click.UsageError(f"cannot build the update: {problems}") from None
        if not result.written:
            newer = f"version {result.stored.version}" if result.stored else "a newer version"
            raise CliError(
                f"not written: Redis already holds {newer} of {app_id}/{kind}, "
                f"newer than {version}; nothing was published"
            )
        log.info("stored %s", update)
        _audit(obj).record(
            AuditEvent.OVERRIDE,
            app_id,
            kind=kind,
            who=obj.operator,
            version=version,
            masked_token=update.masked,
            reason=reason,
        )
        try:
            publish(update, obj.clock())
        except BrokerError as exc:
            raise CliError(
                f"stored {app_id}/{kind} version {version} in Redis but publishing failed "
                f"({exc}); subscribers will find it in the snapshot when they next read it"
            ) from None
    click.echo(f"published {app_id}/{kind}: version {version}")


@main.command()
@click.argument("app_id", callback=_checked(_format.check_app_id))
@click.option("--kind", type=_KINDS, default=TokenKind.ACCESS_TOKEN.value, show_default=True)
@click.option("--reason", callback=_checked(_format.check_reason), help="Why; sent with it.")
@click.pass_obj
def refresh(obj: OpsContext, app_id: str, kind: str, reason: str | None) -> None:
    """Ask the producers to replace the stored token of APP_ID.

    Sends the stored token's SHA-256, never the token. The leader refreshes once within
    WeChat's limits, or re-publishes the current token if this one was already replaced.
    """
    update = obj.stored_update(app_id, TokenKind(kind))
    now_s = obj.clock()
    request = RefreshRequest.for_token(
        app_id,
        update.value,
        kind=update.kind,
        reported_version=update.version,
        requester=obj.operator,
        now_s=now_s,
        reason=reason,
    )
    with obj.open_requester() as send:
        send(request, now_s)
    _audit(obj).record(
        AuditEvent.REFRESH_REQUEST,
        app_id,
        kind=kind,
        who=obj.operator,
        version=update.version,
        masked_token=update.masked,
        reason=reason,
    )
    click.echo(f"refresh requested for {app_id}/{kind} (version {update.version})")


def _audit(obj: OpsContext) -> AuditLog:
    """The audit trail under the configured prefix; recording never raises."""
    return AuditLog(obj.get_redis(), obj.keys(), clock=obj.clock)


@main.command()
@click.argument("app_id", required=False, callback=_checked(_format.check_app_id))
@click.option("--json", "as_json", is_flag=True, help="A JSON list of objects.")
@click.option(
    "--limit", type=click.IntRange(1, 10_000), default=50, show_default=True, help="At most N."
)
@click.pass_obj
def history(obj: OpsContext, app_id: str | None, as_json: bool, limit: int) -> None:
    """Show the audit trail, newest first: of APP_ID, or of every app.

    Refreshes, overrides and refresh requests: when, who, version, the token masked, why.
    """
    entries = _audit(obj).read(app_id, limit=limit)
    if as_json:
        click.echo(_format.to_json(_format.history_records(entries)))
    elif not entries:
        click.echo(f"no audit entries under key prefix {obj.keys().prefix!r}", err=True)
    else:
        click.echo(_format.history_table(entries))


@main.command()
@click.argument("app_id", callback=_checked(_format.check_app_id))
@click.option("--kind", type=_KINDS, default=TokenKind.ACCESS_TOKEN.value, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
@click.option("--reveal", is_flag=True, help="Print the whole token (it is a credential).")
@click.pass_obj
def get(obj: OpsContext, app_id: str, kind: str, as_json: bool, reveal: bool) -> None:
    """Show the stored update of APP_ID.

    The token is masked unless --reveal.
    """
    update = obj.stored_update(app_id, TokenKind(kind))
    now_s = obj.clock()
    if as_json:
        click.echo(_format.to_json(_format.update_dict(update, now_s=now_s, reveal=reveal)))
    else:
        click.echo(_format.describe_update(update, now_s=now_s, reveal=reveal))


@main.command()
@click.option("--json", "as_json", is_flag=True, help="A JSON list of objects.")
@click.pass_obj
def status(obj: OpsContext, as_json: bool) -> None:
    """Show every known app and kind.

    Version, source, seconds left, age and producer; `missing` once a token expired or
    vanished, `invalid` when Redis holds something that is not a valid update.
    """
    reader = SnapshotReader(obj.get_redis(), obj.keys(), obj.codec())
    entries = reader.read_many(reader.known())
    records = _format.status_records(entries, now_s=obj.clock())
    if as_json:
        click.echo(_format.to_json(records))
    elif not records:
        click.echo(f"no apps known under key prefix {obj.keys().prefix!r}", err=True)
    else:
        click.echo(_format.status_table(records))


@main.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.option("--count", type=click.IntRange(min=1), help="Stop after N messages.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    help="Stop after S seconds; with --count, exit 1 if fewer arrived.",
)
@click.pass_obj
def watch(obj: OpsContext, as_json: bool, count: int | None, timeout: float | None) -> None:
    """Print updates as they are published.

    One line per message, the token masked, until Ctrl-C, --count or --timeout.
    """
    settings = obj.get_settings()
    received = 0

    def on_message(_channel: Any, _method: Any, _properties: Any, body: bytes) -> None:
        nonlocal received
        if count is not None and received >= count:
            return
        received += 1
        _emit(_format.message_line(body, now_s=obj.clock(), as_json=as_json, codec=obj.codec()))

    connection = _connect(settings, f"wxtoken-watch/{obj.operator}")
    try:
        channel = connection.channel()
        try:
            channel.exchange_declare(exchange=settings.exchange, passive=True)
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code != 404:
                raise
            raise CliError(
                f"exchange {settings.exchange!r} does not exist yet "
                "(the producer or `wxtoken set` declares it)"
            ) from None
        queue = channel.queue_declare(queue="", exclusive=True, auto_delete=True).method.queue
        channel.queue_bind(queue=queue, exchange=settings.exchange)
        channel.basic_consume(queue=queue, on_message_callback=on_message, auto_ack=True)
        _emit(f"watching exchange {settings.exchange} (Ctrl-C to stop)", err=True)
        deadline = None if timeout is None else time.monotonic() + timeout
        while count is None or received < count:
            limit_s = 1.0 if deadline is None else min(1.0, deadline - time.monotonic())
            if limit_s <= 0:
                break
            connection.process_data_events(time_limit=limit_s)
    except KeyboardInterrupt:
        return
    except AMQP_ERRORS as exc:
        raise BrokerError(f"watching {settings.exchange}: {describe_amqp_error(exc)}") from None
    finally:
        close_quietly(connection)
    if count is not None and received < count:
        raise CliError(f"timed out after {timeout:g} s with {received} of {count} message(s)")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, envvar="WXTOKEN_SANDBOX_HOST")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8080,
    show_default=True,
    envvar="WXTOKEN_SANDBOX_PORT",
    help="0 picks a free port.",
)
@click.option(
    "--apps",
    "apps_spec",
    default=DEFAULT_SANDBOX_APPS,
    envvar="WXTOKEN_SANDBOX_APPS",
    metavar="APPID:SECRET,...",
    help="Apps the sandbox knows (local fake secrets).",
)
@click.option(
    "--expires-in",
    type=click.IntRange(min=1),
    default=7200,
    show_default=True,
    help="Lifetime of the tokens it hands out, in seconds.",
)
@click.option(
    "--overlap",
    type=click.FloatRange(min=0),
    default=300.0,
    show_default=True,
    help="Seconds a superseded token stays valid.",
)
def sandbox(host: str, port: int, apps_spec: str, expires_in: int, overlap: float) -> None:
    """Run the WeChat sandbox in the foreground.

    Prints one line with its URL, then serves until SIGTERM or Ctrl-C.
    """
    from ._sandbox import SandboxConfig, SandboxServer, parse_apps

    try:
        apps = parse_apps(apps_spec)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--apps'") from None
    config = SandboxConfig(
        apps=apps, expires_in_s=expires_in, overlap_s=overlap, host=host, port=port
    )
    try:
        server = SandboxServer(config)
    except OSError as exc:
        raise CliError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.start()
        _emit(f"sandbox listening on {server.base_url}")
        while not stop.wait(0.5):
            pass
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    _emit("sandbox stopped", err=True)


@main.command()
@click.argument("path", type=click.Path(dir_okay=False, writable=True, path_type=Path))
def keygen(path: Path) -> None:
    """Write a new Ed25519 signing key to PATH (mode 0600) and its public key to PATH.pub.

    Give PATH to the producer or an operator as WXTOKEN_SIGNING_KEY_FILE, and PATH.pub to
    every subscriber (and producer) in WXTOKEN_VERIFY_KEYS. Existing files are never
    overwritten.
    """
    try:
        private_path, public_path = generate_keypair(path)
    except FileExistsError as exc:
        raise click.UsageError(f"{exc.filename} exists; keys are never overwritten") from None
    except OSError as exc:
        raise CliError(f"cannot write {exc.filename or path}: {exc.strerror}") from None
    click.echo(f"private key: {private_path} (keep it secret)\npublic key:  {public_path}")


if __name__ == "__main__":
    main(prog_name="wxtoken")
