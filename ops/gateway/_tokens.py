"""What the gateway serves: the newest update of every app and kind, held in memory.

`TokenView` is fed by `TokenClient.on_update` (register it before `start()`), so a read
is a dict lookup and an expiry check. A miss (nothing valid held) is resolved off the
event loop by `resolve()`: one snapshot read through the client, then the set of apps Redis
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
    from producer.upstream_errors import UpstreamFailure

Key = tuple[str, TokenKind]
#: The apps Redis knows are re-read at most this often on misses.
KNOWN_TTL_S = 5.0


class UnknownApp(WxTokenError):
    """Neither the gateway nor Redis has ever held a token of this app and kind."""


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

    def current(self, app_id: str, kind: TokenKind) -> TokenUpdate | None:
        """The held update while valid: no lock, no I/O (the hot path)."""
        update = self._held.get((app_id, kind))
        if update is not None and self._clock() < update.expires_at:
            return update
        return None

    def valid_count(self) -> int:
        now_s = self._clock()
        return sum(1 for u in list(self._held.values()) if now_s < u.expires_at)

    def held(self) -> list[TokenUpdate]:
        return list(self._held.values())

    def resolve(self, app_id: str, kind: TokenKind) -> TokenUpdate:
        """For a miss, off the event loop: the update, or `UnknownApp` / `TokenUnavailable`."""
        try:
            return self._client.get(app_id, timeout=0.0, kind=kind)
        except TokenUnavailable as exc:
            unavailable = exc
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
