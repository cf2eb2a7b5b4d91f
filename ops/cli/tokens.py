"""`wxtoken set`, `refresh` and `get`: override, replace and show one app's token."""

from __future__ import annotations

import logging

import click
from pydantic import ValidationError

from consumer_lib.errors import BrokerError, InvalidUpdate, StoreError
from consumer_lib.snapshot import SnapshotReader
from consumer_lib.wire.refresh_request import RefreshRequest
from consumer_lib.wire.update import TokenKind
from producer.audit import AuditEvent
from producer.issuing import IssueOutcome, Issuer
from producer.store import TokenStore
from producer.upstream_errors import UpstreamErrors

from .. import _format
from .context import KINDS, CliError, OpsContext, audit_log, checked, read_token

log = logging.getLogger(__name__)

MAX_EXPIRES_IN_S = 86_400


@click.command("set")
@click.argument("app_id", callback=checked(_format.check_app_id))
@click.option(
    "--expires-in",
    type=click.IntRange(1, MAX_EXPIRES_IN_S),
    required=True,
    metavar="SECONDS",
    help="Seconds the token stays valid from now (1..86400).",
)
@click.option("--kind", type=KINDS, default=TokenKind.ACCESS_TOKEN.value, show_default=True)
@click.option(
    "--reason", callback=checked(_format.check_reason), help="Why; stored and published with it."
)
@click.option("--allow-new-app", is_flag=True, help="Accept an app Redis has never held.")
@click.pass_obj
def set_token(
    obj: OpsContext,
    app_id: str,
    expires_in: int,
    kind: TokenKind,
    reason: str | None,
    allow_new_app: bool,
) -> None:
    """Store and publish a token read from stdin.

    For a token obtained elsewhere: standard input keeps it out of shell history and `ps`
    (on a terminal it is prompted for, hidden). The broker is reached before anything is
    written, so a failure leaves nothing half-done.
    """
    token = read_token()
    token_kind = TokenKind.parse(kind)
    store = TokenStore(obj.get_redis(), obj.keys(), obj.codec(must_sign=True))
    if not allow_new_app and (app_id, token_kind) not in store.reader.known():
        raise click.UsageError(
            f"Redis has never held {app_id}/{kind} under prefix {obj.keys().prefix!r}; "
            "check the app id, or pass --allow-new-app to introduce it"
        )
    _warn_unless_producers_accept(store, obj.codec(must_sign=True).signer_key_id)
    issuer = Issuer(store, audit=audit_log(obj), who=obj.operator)
    with obj.open_publisher() as publish:
        now_s = obj.clock()
        try:
            update = issuer.new_override(
                app_id, token_kind, token, now_s=now_s, expires_in_s=expires_in, reason=reason
            )
            version = update.version
            issued = issuer.issue(
                update,
                publish=lambda u: publish(u, obj.clock()),
                event=AuditEvent.OVERRIDE,
                reason=reason,
            )
        except StoreError as exc:
            raise CliError(f"Redis: {exc}; nothing was published") from None
        except ValidationError as exc:  # our checks above should make this unreachable
            problems = "; ".join(e["msg"] for e in exc.errors(include_input=False))
            raise click.UsageError(f"cannot build the update: {problems}") from None
        except BrokerError as exc:
            raise CliError(
                f"stored {app_id}/{kind} version {version} in Redis but publishing failed "
                f"({exc}); subscribers will find it in the snapshot when they next read it"
            ) from None
        if issued.outcome is not IssueOutcome.WRITTEN:
            raise CliError(f"not written: {issued.refusal}; nothing was published")
        log.info("stored and published %s", update)
    click.echo(f"published {app_id}/{kind}: version {version}")


@click.command()
@click.argument("app_id", callback=checked(_format.check_app_id))
@click.option("--kind", type=KINDS, default=TokenKind.ACCESS_TOKEN.value, show_default=True)
@click.option("--reason", callback=checked(_format.check_reason), help="Why; sent with it.")
@click.pass_obj
def refresh(obj: OpsContext, app_id: str, kind: TokenKind, reason: str | None) -> None:
    """Ask the producers to replace the stored token of APP_ID.

    Sends the stored token's SHA-256, never the token. The leader refreshes once within
    WeChat's limits, or re-publishes the current token if this one was already replaced.
    With none stored after a failed fetch, the leader retries that fetch now.
    """
    token_kind = TokenKind.parse(kind)
    failure = _last_failure_if_none_stored(obj, app_id, token_kind)
    update = None if failure is not None else obj.stored_update(app_id, token_kind)
    now_s = obj.clock()
    request = RefreshRequest.for_token(
        app_id,
        "" if update is None else update.value,  # none held: "try the failed fetch now"
        kind=token_kind,
        reported_version=None if update is None else update.version,
        requester=obj.operator,
        now_s=now_s,
        reason=reason,
    )
    with obj.open_requester() as send:
        send(request, now_s)
    audit_log(obj).record(
        AuditEvent.REFRESH_REQUEST,
        app_id,
        kind=kind,
        who=obj.operator,
        version=None if update is None else update.version,
        masked_token=None if update is None else update.masked,
        reason=reason,
    )
    if update is None:
        click.echo(f"retry requested for {app_id}/{kind}: none stored, {failure}")
        return
    click.echo(f"refresh requested for {app_id}/{kind} (version {update.version})")


def _last_failure_if_none_stored(obj: OpsContext, app_id: str, kind: TokenKind) -> str | None:
    """What `wxtoken status` says of the last failed fetch when Redis holds no token but
    that failure (the leader then fetches again now); None otherwise."""
    reader = SnapshotReader(obj.get_redis(), obj.keys(), obj.codec())
    try:
        if reader.read(app_id, kind) is not None:
            return None
        failure = UpstreamErrors(obj.get_redis(), obj.keys()).read_all().get((app_id, kind))
    except (InvalidUpdate, StoreError):
        return None  # `stored_update` says what is wrong
    return None if failure is None else failure.note(now_s=obj.clock())


@click.command()
@click.argument("app_id", callback=checked(_format.check_app_id))
@click.option("--kind", type=KINDS, default=TokenKind.ACCESS_TOKEN.value, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
@click.option("--reveal", is_flag=True, help="Print the whole token (it is a credential).")
@click.pass_obj
def get(obj: OpsContext, app_id: str, kind: TokenKind, as_json: bool, reveal: bool) -> None:
    """Show the stored update of APP_ID.

    The token is masked unless --reveal.
    """
    update = obj.stored_update(app_id, TokenKind.parse(kind))
    now_s = obj.clock()
    if as_json:
        click.echo(_format.to_json(_format.update_dict(update, now_s=now_s, reveal=reveal)))
    else:
        click.echo(_format.describe_update(update, now_s=now_s, reveal=reveal))


def _warn_unless_producers_accept(store: TokenStore, signer_key_id: str | None) -> None:
    """Warn (stderr) when the producers announced verify keys that do not include ours: they
    would delete the override as invalid and write their own token back."""
    try:
        announced = store.announced_verify_keys()
    except StoreError:
        return  # the write below reports Redis problems
    if announced is None or signer_key_id is None or signer_key_id in announced:
        return
    click.echo(
        f"warning: the producers verify with key ids {', '.join(sorted(announced)) or 'none'}; "
        f"this signing key ({signer_key_id}) is not among them, so they will delete this "
        "override as invalid: add its .pub to the producers' WXTOKEN_VERIFY_KEYS "
        "(compose: deploy/keys/)",
        err=True,
    )
