"""`wxtoken status`, `watch` and `history`: what Redis holds, what is published, who did what."""

from __future__ import annotations

import time
from dataclasses import dataclass

import click

from consumer_lib.amqp import Delivery
from consumer_lib.errors import ExchangeMissing, InvalidUpdate
from consumer_lib.redis_errors import translated
from consumer_lib.snapshot import SnapshotReader
from consumer_lib.wire.kinds import TokenKind
from producer.leadership.announcement import read_announcement
from producer.leadership.clock_skew import WARN_S as SKEW_WARN_S
from producer.leadership.clock_skew import read_skews
from producer.store.upstream_failures import UpstreamErrors

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


#: `wxtoken status` exits with this when a served credential is not `ok`, or no producer leads.
STATUS_UNHEALTHY = 3


@click.command(
    epilog=(
        "Exit status: 0 when a producer leads and every credential it serves is ok; 3 when a "
        "served credential is missing, expired or invalid, or no producer holds the lease "
        "(without a current announcement every known credential counts as served); 1 when "
        "Redis cannot be read; 2 for bad settings."
    )
)
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
    leader = _leader(obj)
    records = _format.status_records(
        entries, now_s=obj.clock(), failures=failures, served=leader.served
    )
    if as_json:
        click.echo(_format.to_json(records))
    elif not records:
        click.echo(leader.line, err=True)
        click.echo(f"no apps known under key prefix {obj.keys().prefix!r}", err=True)
    else:
        click.echo(leader.line, err=True)
        for line in _skew_lines(obj):
            click.echo(line, err=True)
        click.echo(_format.status_table(records))
    unhealthy = [
        record for record in records if record["state"] != "ok" and record["served"] in (True, None)
    ]
    if not leader.present or unhealthy:
        click.get_current_context().exit(STATUS_UNHEALTHY)


def _skew_lines(obj: OpsContext) -> list[str]:
    """One WARNING line per producer whose clock was last measured more than `WARN_S`
    from Redis's."""
    return [
        f"WARNING: producer {report.producer_id}'s clock is {report.skew_s:+.1f} s from "
        f"Redis's (measured {_format.seconds(obj.clock() - report.at)} ago): fix NTP"
        for report in read_skews(obj.get_redis(), obj.keys())
        if abs(report.skew_s) > SKEW_WARN_S
    ]


@dataclass(frozen=True)
class _Leader:
    """Who holds the lease, and what it announced it serves."""

    #: Whether any producer holds the lease now.
    present: bool
    #: The apps the current leader announced; None when unknown (no current announcement).
    served: set[str] | None
    #: One line about it, for stderr.
    line: str


def _leader(obj: OpsContext) -> _Leader:
    """The lease holder and its announcement: an announcement left by a producer that no
    longer holds the lease (a clean stop releases it) serves nothing."""
    keys = obj.keys()
    client = obj.get_redis()
    with translated("reading the lease", client):
        raw = client.get(keys.leader)
    if raw is None:
        return _Leader(
            present=False,
            served=set(),
            line=f"no leader: no producer holds the lease ({keys.leader} is empty)",
        )
    holder = (raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw))[:200]
    epoch, _, owner = holder.partition("|")
    try:
        announced = read_announcement(obj.get_redis(), keys)
    except InvalidUpdate as exc:
        return _Leader(
            True, None, f"leader {_format.one_line(owner)}; its announcement is unreadable: {exc}"
        )
    if announced is None or announced.owner != owner:
        return _Leader(
            True,
            None,
            f"leader {_format.one_line(owner)} (epoch {_format.one_line(epoch)}) has not "
            "announced the apps it serves yet",
        )
    age = _format.seconds(obj.clock() - announced.at)
    return _Leader(
        True,
        set(announced.apps),
        f"leader {announced.producer_id} (epoch {announced.epoch}) serves "
        f"{len(announced.apps)} app(s), announced {age} ago",
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
    --kind, updates of other kinds are skipped (rejected messages are always shown). A
    version shown before (the leader re-publishes what it holds about every minute) is
    marked `(re-published)`, in JSON `"republished": true`.
    """
    settings = obj.get_settings()
    codec = obj.codec()  # no verify keys: refuse now, not at the first message
    seen: _format.Seen = {}
    received = 0

    def on_message(delivery: Delivery) -> None:
        nonlocal received
        if count is not None and received >= count:
            return
        body = delivery.body
        if kind is not None and _format.message_kind(body, codec=codec) not in (kind, None):
            return
        received += 1
        emit(_format.message_line(body, now_s=obj.clock(), as_json=as_json, codec=codec, seen=seen))

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
