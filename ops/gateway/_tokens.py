"""What the gateway serves: the client's valid tokens, with the expiry `get_token()` uses.

A read asks the `TokenClient` (`held_until`: a dict lookup and an expiry check), so every
answer's validity and `expires_in` is the client's: `expires_at` corrected by its estimate
of the clock offset to the producer, a snapshot's `PTTL`, never past the token's lifetime
from receipt. The gateway's own clock alone would serve a token after WeChat dropped it
when that clock is behind. `TokenClient.on_update` (register before `start()`) only records
which apps and kinds were ever held. A miss (nothing valid held) is resolved off the event
loop by `resolve()`: one snapshot read through the client, then the set of apps Redis
knows (cached a few seconds) tells an unknown app (404) from a known one without a valid
token (503, with the client's reason and, when newer than the token last held, the
producer's last upstream error: "IP 1.2.3.4 not whitelisted (errcode 40164, 12s ago)").
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from consumer_lib import (
    StoreError,
    TokenClient,
    TokenKind,
    TokenUnavailable,
    TokenUpdate,
    WxTokenError,
)

if TYPE_CHECKING:
    from producer.store.upstream_failures import UpstreamFailure

Key = tuple[str, TokenKind]
#: The apps Redis knows are re-read at most this often on misses.
KNOWN_TTL_S = 5.0


class UnknownApp(WxTokenError):
    """Neither the gateway nor Redis has ever held a token of this app and kind."""


class AmbiguousApp(WxTokenError):
    """A platform customer's appid that several platforms' credentials are held for."""


#: A valid update and its expiry on the gateway's clock (`TokenClient.held_until`).
Held = tuple[TokenUpdate, float]


class TokenView:
    def __init__(
        self,
        client: TokenClient,
        known: Callable[[], list[Key]],
        *,
        clock: Callable[[], float] = time.time,
        last_failure: Callable[[str, TokenKind], UpstreamFailure | None] | None = None,
    ) -> None:
        self._client = client
        self._known = known
        self._last_failure = last_failure
        self._clock = clock
        self._held: dict[Key, TokenUpdate] = {}
        self._lock = threading.Lock()
        self._known_cache: tuple[float, frozenset[Key]] | None = None
        client.on_update(self._on_update)

    def _on_update(self, update: TokenUpdate) -> None:
        key = (update.app_id, update.kind)
        with self._lock:
            held = self._held.get(key)
            if held is None or held.version < update.version:
                self._held[key] = update

    def current(self, app_id: str, kind: TokenKind) -> Held | None:
        """The client's update while valid, with its local expiry: no I/O (the hot path). A
        platform customer's own appid reads its one platform's credential."""
        try:
            return self._client.held_until(app_id, kind)
        except ValueError:  # several platforms serve it: `resolve` says so
            return None

    def valid_count(self) -> int:
        return self._client.valid_count()

    def holds(self, app_id: str, kind: TokenKind) -> bool:
        """True once a `kind` of `app_id` has reached this gateway (valid or not)."""
        return (app_id, kind) in self._held

    def held(self) -> list[TokenUpdate]:
        """The newest update of each app and kind ever pushed, valid or not."""
        return list(self._held.values())

    def resolve(self, app_id: str, kind: TokenKind) -> Held:
        """For a miss, off the event loop: the update and its local expiry, or `UnknownApp`
        / `TokenUnavailable` (`AmbiguousApp` for a customer of several platforms)."""
        try:
            app_id = self._client.resolve_app_id(app_id)
        except ValueError as exc:
            raise AmbiguousApp(str(exc)) from None
        try:
            self._client.get(app_id, timeout=0.0, kind=kind)
        except TokenUnavailable as exc:
            unavailable = exc
        else:
            found = self._client.held_until(app_id, kind)
            if found is not None:
                return found
            unavailable = TokenUnavailable(f"the {kind} of app {app_id!r} expired just now")
        if (app_id, kind) not in self._held and not self._is_known(app_id, kind):
            raise UnknownApp(f"no {kind} of app {app_id!r} has ever been stored") from None
        failure = self._failure_note(app_id, kind)
        if failure is not None:
            raise TokenUnavailable(f"{unavailable}; the producer's last fetch: {failure}")
        raise unavailable

    def _failure_note(self, app_id: str, kind: TokenKind) -> str | None:
        """What `wxtoken status` says of the last failed fetch, if newer than the token held."""
        if self._last_failure is None:
            return None
        try:
            failure = self._last_failure(app_id, kind)
        except StoreError:
            return None
        held = self._held.get((app_id, kind))
        if failure is None or (held is not None and failure.at_s < held.issued_at):
            return None
        return failure.note(now_s=self._clock())

    def _is_known(self, app_id: str, kind: TokenKind) -> bool:
        """True when Redis lists the app, or when Redis cannot tell (then 503, not 404)."""
        now_m = time.monotonic()
        cached = self._known_cache
        if cached is None or now_m - cached[0] > KNOWN_TTL_S:
            try:
                cached = (now_m, frozenset(self._known()))
            except StoreError:
                return True
            self._known_cache = cached
        return (app_id, kind) in cached[1]
