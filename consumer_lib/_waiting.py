"""Reading the cache when it holds no valid token: the wait for one (`wait_for_update`) and
the message of a `TokenUnavailable`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import TokenUnavailable
from .wire.update import TokenKind, TokenUpdate

if TYPE_CHECKING:
    from ._cache import TokenCache
    from ._feeding import UpdateFeed
    from .transport import Transport


def why_unavailable(
    app_id: str,
    kind: TokenKind,
    timeout_s: float,
    *,
    held: TokenUpdate | None,
    connected: bool,
    broker_error: str | None,
    store_error: str | None,
) -> str:
    """The message of the `TokenUnavailable` raised after waiting `timeout_s` in vain."""
    if held is not None:
        what = f"the held {kind} v{held.version} expired at {held.expires_at:.0f}"
    else:
        what = f"no {kind} for app {app_id!r}"
    broker = (
        "broker connected" if connected else f"broker unreachable ({broker_error or 'connecting'})"
    )
    if store_error is not None:
        store = f"Redis unreachable ({store_error})"
    else:
        store = "Redis has no valid snapshot for it (is a producer running for this app?)"
    return f"{what} and none arrived within {timeout_s:g} s: {store}; {broker}"


def wait_for_update(
    cache: TokenCache,
    feed: UpdateFeed,
    transport: Transport,
    app_id: str,
    kind: TokenKind,
    timeout_s: float,
) -> TokenUpdate:
    """Read `app_id`'s snapshot once, then wait up to `timeout_s` for a valid update of
    `kind`; raises `TokenUnavailable`, saying why, when none arrives."""
    feed.read_one(app_id, kind)
    update = cache.wait_for(app_id, kind, timeout_s)
    if update is None:
        raise TokenUnavailable(
            why_unavailable(
                app_id,
                kind,
                timeout_s,
                held=cache.held(app_id, kind),
                connected=transport.connected,
                broker_error=transport.last_error,
                store_error=feed.last_store_error,
            )
        )
    return update
