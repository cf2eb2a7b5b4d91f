"""`wxtoken status`, `watch` and `history`: what Redis holds, what is published, who did what."""

from __future__ import annotations

import time

import click

from consumer_lib.amqp import Delivery
from consumer_lib.errors import ExchangeMissing, InvalidUpdate
from consumer_lib.snapshot import SnapshotReader
from consumer_lib.wire.kinds import TokenKind
from producer.announcement import read_announcement
from producer.clock_skew import WARN_S as SKEW_WARN_S
from producer.clock_skew import read_skews
from producer.upstream_errors import UpstreamErrors

from .. import _format
from ..broker import connect
from .context import KINDS, CliError, OpsContext, audit_log, checked, emit

kind_filter = click.option(
    "--kind", type=KINDS, default=None, help="Only this kind (default: all)."
)


@click.command()
@click.argument("app_id", required=False, callback=checked(_format.check_app_id))
@kind_filter
@click.option("--json", "as_json", is_flag=True, help="A JSON list of objects.")
@click.option(
    "--limit", type=click.IntRange(1, 10_000), default=50, show_default=True, help="At most N."
)
@click.pass_obj
def history(
    obj: OpsContext, app_id: str | None, kind: TokenKind | None, as_json: bool, limit: int
) -> None:
    """Show the audit trail, newest first: of APP_ID, or of every app.

    Refreshes, overrides and refresh requests: when, who, version, the token masked, why.
    """
    entries = audit_log(obj).read(app_id, kind=None if kind is None else str(kind), limit=limit)
    if as_json:
        click.echo(_format.to_json(_format.history_records(entries)))
    elif not entries:
        click.echo(f"no audit entries under key prefix {obj.keys().prefix!r}", err=True)
    else:
        click.echo(_format.history_table(entries))


@click.command()
@kind_filter
@click.option("--json", "as_json", is_flag=True, help="A JSON list of objects.")
@click.pass_obj
def status(obj: OpsContext, kind: TokenKind | None, as_json: bool) -> None:
    """Show every known app and kind.

    Version, source, seconds left, age and producer; `missing` once a token expired or
    vanished, `invalid` when Redis holds something that is not a valid update. A fetch
    that failed since the token was issued is noted, e.g. "IP 1.2.3.4 not whitelisted".
    """
    reader = SnapshotReader(obj.get_redis(), obj.keys(), obj.codec())
    failures = UpstreamErrors(obj.get_redis(), obj.keys()).read_all()
    # An app whose first fetch failed (an IP not whitelisted) is known by its failure only.
    known = sorted(set(reader.known()) | set(failures))
    wanted = [entry for entry in known if kind is None or entry[1] is kind]
    entries = reader.read_many(wanted)
    served, about_leader = _served(obj)
    records = _format.status_records(entries, now_s=obj.clock(), failures=failures, served=served)
    if as_json:
        click.echo(_format.to_json(records))
    elif not records:
        click.echo(f"no apps known under key prefix {obj.keys().prefix!r}", err=True)
    else:
        click.echo(about_leader, err=True)
        for line in _skew_lines(obj):
            click.echo(line, err=True)
        click.echo(_format.status_table(records))


def _skew_lines(obj: OpsContext) -> list[str]:
    """One WARNING line per producer whose clock was last measured more than `WARN_S`
    from Redis's."""
    return [
        f"WARNING: producer {report.producer_id}'s clock is {report.skew_s:+.1f} s from "
        f"Redis's (measured {_format.seconds(obj.clock() - report.at)} ago): fix NTP"
        for report in read_skews(obj.get_redis(), obj.keys())
        if abs(report.skew_s) > SKEW_WARN_S
    ]


def _served(obj: OpsContext) -> tuple[set[str] | None, str]:
    """The apps the leader announced it serves, and one line about it for stderr."""
    try:
        announced = read_announcement(obj.get_redis(), obj.keys())
    except InvalidUpdate as exc:
        return None, f"leader's announcement unreadable: {exc}"
    if announced is None:
        return None, "no producer has announced the apps it serves"
    return set(announced.apps), (
        f"leader {announced.producer_id} (epoch {announced.epoch}) serves "
        f"{len(announced.apps)} app(s), announced {_format.seconds(obj.clock() - announced.at)} ago"
    )


@click.command()
@kind_filter
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.option("--count", type=click.IntRange(min=1), help="Stop after N messages.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    help="Stop after S seconds; with --count, exit 1 if fewer arrived.",
)
@click.pass_obj
def watch(
    obj: OpsContext,
    kind: TokenKind | None,
    as_json: bool,
    count: int | None,
    timeout: float | None,
) -> None:
    """Print updates as they are published.

    One line per message, the token masked, until Ctrl-C, --count or --timeout. With
    --kind, updates of other kinds are skipped (rejected messages are always shown).
    """
    settings = obj.get_settings()
    received = 0

    def on_message(delivery: Delivery) -> None:
        nonlocal received
        if count is not None and received >= count:
            return
        body = delivery.body
        if kind is not None and _format.message_kind(body, codec=obj.codec()) not in (kind, None):
            return
        received += 1
        emit(_format.message_line(body, now_s=obj.clock(), as_json=as_json, codec=obj.codec()))

    def on_cancel() -> None:
        emit("the broker cancelled the subscription", err=True)

    connection = connect(settings, f"wxtoken-watch/{obj.operator}")
    try:
        channel = connection.channel()
        try:
            channel.check_exchange(settings.exchange)
        except ExchangeMissing:
            raise CliError(
                f"exchange {settings.exchange!r} does not exist yet "
                "(the producer or `wxtoken set` declares it)"
            ) from None
        channel.subscribe(settings.exchange, on_message, on_cancel=on_cancel)
        emit(f"watching exchange {settings.exchange} (Ctrl-C to stop)", err=True)
        deadline = None if timeout is None else time.monotonic() + timeout
        while count is None or received < count:
            limit_s = 1.0 if deadline is None else min(1.0, deadline - time.monotonic())
            if limit_s <= 0:
                break
            connection.process_events(limit_s)
    except KeyboardInterrupt:
        return
    finally:
        connection.close()
    if count is not None and received < count:
        raise CliError(f"timed out after {timeout:g} s with {received} of {count} message(s)")
