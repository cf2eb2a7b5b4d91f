"""`wxtoken quota clear APP_ID`: ask the leader to call WeChat's clear_quota for an app.

Only the producer holds app secrets, so the CLI publishes a `ControlRequest` signed with
the operator's key (WXTOKEN_SIGNING_KEY_FILE) on the requests exchange and waits for the
leader's `ControlAnswer` in Redis (`KeyLayout.control_answer`). Exit 0 when cleared, 1 when
WeChat or the leader said no, or when no answer came in time (the message says what to
check), 2 for bad arguments or a missing signing key.
"""

from __future__ import annotations

import click
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from consumer_lib.errors import InvalidUpdate
from consumer_lib.redis_errors import REDIS_ERRORS, translated
from consumer_lib.wire.control import (
    ControlAction,
    ControlAnswer,
    ControlRequest,
    ControlResult,
    new_request_id,
)
from consumer_lib.wire.signing import key_id, load_private_key

from .. import _format
from ..broker import control_channel
from .context import BadConfig, CliError, OpsContext, checked, emit

#: How often the CLI looks for the answer.
POLL_S = 0.25
#: WeChat's allowance of clear_quota calls per app and month.
CLEARS_PER_MONTH = 10


@click.group()
def quota() -> None:
    """WeChat's API call quota of an app."""


@quota.command("clear")
@click.argument("app_id", callback=checked(_format.check_app_id))
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--reason", callback=checked(_format.check_reason), help="Why; audited.")
@click.option(
    "--timeout",
    type=click.FloatRange(1, 300),
    default=30.0,
    show_default=True,
    metavar="SECONDS",
    help="How long to wait for the leader's answer.",
)
@click.pass_obj
def clear(obj: OpsContext, app_id: str, yes: bool, reason: str | None, timeout: float) -> None:
    """Reset WeChat's API call quota of APP_ID (POST /cgi-bin/clear_quota/v2).

    The leading producer makes the call, since only it holds the secret; the request is
    signed with WXTOKEN_SIGNING_KEY_FILE, which the producers must trust for control
    requests (their WXTOKEN_CONTROL_KEYS). WeChat allows 10 a month per app; the producers
    space one app's clears (WXTOKEN_CLEAR_QUOTA_MIN_INTERVAL_S, an hour by default).
    """
    signer = control_signer(obj, "a quota clear")
    if not yes:
        click.confirm(
            f"Clear WeChat's API quota of {app_id}? This spends one of the app's "
            f"{CLEARS_PER_MONTH} clear_quota calls a month",
            abort=True,
            err=True,
        )
    now_s = obj.clock()
    request = ControlRequest(
        action=ControlAction.CLEAR_QUOTA,
        app_id=app_id,
        request_id=new_request_id(),
        operator=obj.operator,
        issued_at=now_s,
        reason=reason,
    )
    answer = ask_leader(obj, signer, request, f"clear the quota of {app_id}", timeout_s=timeout)
    if answer.result is ControlResult.DONE:
        click.echo(f"cleared: the API quota of {app_id} is reset (by {answer.producer_id})")
        return
    if answer.result is ControlResult.FAILED:
        raise CliError(f"clear_quota of {app_id} failed: {answer.message}")
    raise CliError(f"the leader ({answer.producer_id}) refused: {answer.message}")


def control_signer(obj: OpsContext, what: str) -> Ed25519PrivateKey:
    """The operator's key (WXTOKEN_SIGNING_KEY_FILE) that signs `what`; `BadConfig` when
    none is set."""
    settings = obj.get_settings()
    if settings.signing_key_file is None:
        raise BadConfig(
            f"WXTOKEN_SIGNING_KEY_FILE is not set: {what} must be signed with an operator key "
            "the producers trust for control requests (WXTOKEN_CONTROL_KEYS)"
        )
    return load_private_key(settings.signing_key_file)


def ask_leader(
    obj: OpsContext,
    signer: Ed25519PrivateKey,
    request: ControlRequest,
    what: str,
    *,
    timeout_s: float,
) -> ControlAnswer:
    """Publish `request` signed by `signer`, say so on stderr, and return the leader's
    answer; `CliError` saying why when none comes within `timeout_s`."""
    factory = obj.controller or control_channel
    with factory(obj.get_settings(), f"wxtoken-ops/{obj.operator}") as send:
        send(request.seal(signer), request.issued_at)
    emit(
        f"asked the leader to {what} (request {request.request_id[:8]}); "
        f"waiting up to {timeout_s:g} s",
        err=True,
    )
    answer = wait_for_answer(obj, request, timeout_s=timeout_s)
    if answer is None:
        raise CliError(timeout_message(obj, timeout_s, key_id(signer.public_key())))
    return answer


def wait_for_answer(
    obj: OpsContext, request: ControlRequest, *, timeout_s: float
) -> ControlAnswer | None:
    """The leader's answer, or None after `timeout_s`; a malformed one is an error."""
    client = obj.get_redis()
    key = obj.keys().control_answer(request.request_id)
    deadline_s = obj.clock() + timeout_s
    while True:
        with translated("waiting for the answer", client):
            raw = client.get(key)
        if raw is not None:
            try:
                answer = ControlAnswer.decode(raw)
            except InvalidUpdate as exc:
                raise CliError(f"Redis holds a malformed answer at {key}: {exc}") from None
            if answer.app_id != request.app_id or answer.action is not request.action:
                raise CliError(f"Redis holds an answer about something else at {key}")
            return answer
        if obj.clock() >= deadline_s:
            return None
        obj.sleep(POLL_S)


def timeout_message(obj: OpsContext, timeout_s: float, signer_id: str) -> str:
    """Why no answer came, as far as Redis can tell."""
    keys = obj.keys()
    try:
        holder = obj.get_redis().get(keys.leader)
    except REDIS_ERRORS:
        holder = None
    head = f"no answer in {timeout_s:g} s"
    if holder is None:
        return (
            f"{head}: no producer leads ({keys.leader} is empty); is a producer running "
            f"with WXTOKEN_KEY_PREFIX={keys.prefix}?"
        )
    leader = (holder.decode(errors="replace") if isinstance(holder, bytes) else str(holder))[:160]
    return (
        f"{head} from the leader ({leader.partition('|')[2] or leader}): is this request's "
        f"key {signer_id} in its WXTOKEN_CONTROL_KEYS, and does it use "
        f"WXTOKEN_EXCHANGE={obj.get_settings().exchange}? Its log names a refused request"
    )
