"""`wxtoken set`, `refresh` and `get`: override, replace and show one app's token.

`refresh` is an operator's signed control request (`consumer_lib.wire.control`), like
`quota clear`: the leader judges it (`producer.refresh.operator`) and the CLI prints the
verdict it stores in Redis.
"""

from __future__ import annotations

import click
from pydantic import ValidationError

from consumer_lib.errors import InvalidUpdate, StoreError
from consumer_lib.snapshot import SnapshotReader
from consumer_lib.wire.control import ControlAction, ControlRequest, ControlResult, new_request_id
from consumer_lib.wire.update import TokenKind
from producer.store.issuing import Issuer
from producer.store.overrides import Overridden, OverrideOutcome, issue_override
from producer.store.tokens import TokenStore
from producer.store.upstream_failures import UpstreamErrors

from .. import _format
from .context import KINDS, CliError, OpsContext, audit_log, checked, read_token
from .quota import ask_leader, control_signer

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
    try:
        done = issue_override(
            issuer,
            obj.open_publisher,
            app_id,
            token_kind,
            token,
            clock=obj.clock,
            expires_in_s=expires_in,
            reason=reason,
        )
    except StoreError as exc:
        raise CliError(f"Redis: {exc}; nothing was published") from None
    except ValidationError as exc:  # our checks above should make this unreachable
        problems = "; ".join(e["msg"] for e in exc.errors(include_input=False))
        raise click.UsageError(f"cannot build the update: {problems}") from None
    click.echo(_published(done, f"{app_id}/{kind}"))


def _published(done: Overridden, what: str) -> str:
    """The line `wxtoken set` prints for a published override; `CliError` otherwise."""
    if done.outcome is OverrideOutcome.SKEWED:
        raise CliError(f"{done.skewed}; nothing was written or published")
    assert done.update is not None  # allocated in every other outcome
    version = done.update.version
    if done.outcome is OverrideOutcome.REFUSED:
        raise CliError(f"not written: {done.refusal}; nothing was published")
    if done.outcome is OverrideOutcome.UNPUBLISHED:
        raise CliError(
            f"stored {what} version {version} in Redis but publishing failed "
            f"({done.publish_error}); subscribers will find it in the snapshot when they "
            "next read it"
        )
    return f"published {what}: version {version}"


#: `wxtoken refresh` exits with these when the leader did not replace the credential.
REFUTED_EXIT = 3
OVER_BUDGET_EXIT = 4


@click.command(
    epilog=(
        "Exit status: 0 replaced (or replaced already since the version you saw); 3 "
        "refuted: upstream accepts the token, nothing changed (--force rotates it); 4 over "
        "budget (WeChat's or ours), nothing changed; 1 the refresh failed, the leader "
        "refused, or no answer within --timeout; 2 bad arguments or no signing key."
    )
)
@click.argument("app_id", callback=checked(_format.check_app_id))
@click.option("--kind", type=KINDS, default=TokenKind.ACCESS_TOKEN.value, show_default=True)
@click.option("--reason", callback=checked(_format.check_reason), help="Why; audited.")
@click.option(
    "--force",
    is_flag=True,
    help="Replace it even though upstream accepts it (a leaked token), within WeChat's "
    "budget (a stable token: 20 forced refreshes a day, 30 s apart) and ours.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(1, 300),
    default=30.0,
    show_default=True,
    metavar="SECONDS",
    help="How long to wait for the leader's verdict.",
)
@click.pass_obj
def refresh(
    obj: OpsContext,
    app_id: str,
    kind: TokenKind,
    reason: str | None,
    force: bool,
    timeout: float,
) -> None:
    """Ask the leader to replace the stored token of APP_ID, and print its verdict.

    The leader checks the token upstream first: if upstream accepts it, nothing changes
    (refuted). If upstream refuses it, or with --force, it fetches a new one within the
    budgets, audited with your name. The request is signed with WXTOKEN_SIGNING_KEY_FILE,
    which the producers must trust (WXTOKEN_CONTROL_KEYS). With none stored after a failed
    fetch, the leader tries that fetch now (an operator's "try now").
    """
    signer = control_signer(obj, "a refresh")
    token_kind = TokenKind.parse(kind)
    failure = _last_failure_if_none_stored(obj, app_id, token_kind)
    update = None if failure is not None else obj.stored_update(app_id, token_kind)
    now_s = obj.clock()
    request = ControlRequest(
        action=ControlAction.FORCE_REFRESH if force else ControlAction.REFRESH,
        app_id=app_id,
        kind=token_kind,
        request_id=new_request_id(),
        operator=obj.operator,
        issued_at=now_s,
        reason=reason,
        seen_version=None if update is None else update.version,
    )
    what = f"{app_id}/{token_kind}"
    seen = f"v{update.version}" if update is not None else f"(none stored, {failure})"
    verb = "force a refresh of" if force else "refresh"
    answer = ask_leader(obj, signer, request, f"{verb} {what} {seen}", timeout_s=timeout)
    by = f"(by {answer.producer_id})"
    if answer.result is ControlResult.DONE:
        note = "" if answer.message.startswith("replaced") else f"; {answer.message}"
        click.echo(f"replaced: {what} is version {answer.version} {by}{note}")
        return
    if answer.result is ControlResult.REFUTED:
        click.echo(f"refuted: {what}: {answer.message} {by}")
        click.get_current_context().exit(REFUTED_EXIT)
    if answer.result is ControlResult.OVER_BUDGET:
        click.echo(f"over budget: {what} not replaced: {answer.message} {by}")
        click.get_current_context().exit(OVER_BUDGET_EXIT)
    verb = "failed" if answer.result is ControlResult.FAILED else "refused"
    raise CliError(f"{verb}: {what}: {answer.message} {by}")


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
