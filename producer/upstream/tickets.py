"""Fetching a ticket with the app's access token, and what to do when that token is refused.

A ticket (jsapi, wx_card, WeCom's corp and agent tickets) is fetched with the app's current
access token. When upstream refuses the *token* (40001/40014/42001, WeCom's 301002; the
client raises `UpstreamError` of kind TOKEN_INVALID), the token in hand is dead although
it has not expired (an outside fetch superseded it, WeCom invalidated it early): refresh
it the way a passive refresh would (coalesced, within the day's budget), then fetch the
ticket once more with the new token. Never a loop: a second refusal is an error.

How the ticket backs off when the token cannot be refreshed at once:
- a step of the token refresher is in progress (it may be refreshing that very token):
  `TokenBusy`, asked again `TOKEN_BUSY_RETRY_S` later; never waiting on its lock;
- the token's budget refuses the refresh: QUOTA (the long backoff);
- not the leader any more, or the token refresh failed upstream: TRANSIENT.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol, TypeVar

from consumer_lib.wire.kinds import TokenKind
from consumer_lib.wire.update import mask
from producer.app_config import AppConfig
from producer.upstream.errcodes import FailureKind
from producer.upstream.errors import FetchedToken, UpstreamError

log = logging.getLogger(__name__)

T = TypeVar("T")


class TicketFetcher(Protocol):
    """What this needs from upstream (`producer.upstream.routing.Upstream` is one)."""

    def fetch_ticket(self, app: AppConfig, kind: TokenKind, access_token: str) -> FetchedToken: ...


#: A ticket refused its token while the token refresher was in a step asks again this
#: much later (by then that step holds the token it fetched, or has given up).
TOKEN_BUSY_RETRY_S = 1.0


class TokenBusy(UpstreamError):
    """The token refresher is in a step now: ask again in `retry_in_s`, spending nothing
    and waiting on no lock. Not an upstream failure: not counted or recorded as one."""

    def __init__(self, message: str, *, retry_in_s: float = TOKEN_BUSY_RETRY_S) -> None:
        super().__init__(message, kind=FailureKind.TRANSIENT)
        self.retry_in_s = retry_in_s


#: Given the refused token, refresh the app's access token and return the new one, or
#: None when its budget refuses; raises `TokenBusy` while a token step is in progress, and
#: `UpstreamError` (TRANSIENT) when not the leader or the refresh failed upstream.
RefreshToken = Callable[[str], str | None]


def fetch_ticket(
    upstream: TicketFetcher,
    app: AppConfig,
    kind: TokenKind,
    *,
    access_token: str | None,
    refresh_token: RefreshToken,
) -> FetchedToken:
    """Ticket `kind` of `app` with `access_token`; on a refused token, refresh it once
    through `refresh_token` and retry. Raises `UpstreamError` with the kind to back off by."""
    return call_with_token(
        lambda token: upstream.fetch_ticket(app, kind, token),
        what=f"{app.app_id}: {kind}",
        using="the access token",
        token=access_token,
        refresh_token=refresh_token,
    )


def call_with_token(
    call: Callable[[str], T],
    *,
    what: str,
    using: str,
    token: str | None,
    refresh_token: RefreshToken,
) -> T:
    """`call(token)`; when upstream refuses the token itself (TOKEN_INVALID), refresh it
    once through `refresh_token` and call again with the new one. Used for tickets (with the
    app's access token) and authorizer tokens (with the platform's component token)."""
    if token is None:
        raise UpstreamError(
            f"{what}: no {using.removeprefix('the ')} held to fetch with",
            kind=FailureKind.TRANSIENT,
        )
    try:
        return call(token)
    except UpstreamError as exc:
        if exc.kind is not FailureKind.TOKEN_INVALID:
            raise
        refused = exc
    log.warning(
        "%s: the fetch refused %s %s (%s); refreshing it first",
        what,
        using,
        mask(token),
        refused,
    )
    fresh = refresh_token(token)
    if fresh is None:
        raise UpstreamError(
            f"{what}: the fetch refused the {using} and its budget refuses its refresh "
            f"now ({refused})",
            kind=FailureKind.QUOTA,
            errcode=refused.errcode,
        )
    if fresh == token:
        raise UpstreamError(
            f"{what}: the fetch refused the {using} and its refresh handed the same one "
            f"back ({refused})",
            kind=FailureKind.TRANSIENT,
            errcode=refused.errcode,
        )
    try:
        return call(fresh)
    except UpstreamError as exc:
        if exc.kind is FailureKind.TOKEN_INVALID:
            raise UpstreamError(
                f"{what}: the fetch refused a freshly fetched {using} too ({exc})",
                kind=FailureKind.CONFIG,
                errcode=exc.errcode,
            ) from None
        raise
