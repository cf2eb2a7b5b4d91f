"""The in-memory token holder of a subscriber: the highest version wins, expiry is checked
on every read, and readers can wait for a token to arrive."""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable

from .wire.update import TokenKind, TokenUpdate

Key = tuple[str, TokenKind]


class Offer(enum.Enum):
    """What became of an update offered to the cache."""

    ACCEPTED = "accepted"
    STALE = "stale"  # same or older version than the one held
    EXPIRED = "expired"  # already past its expires_at


class TokenCache:
    """Thread-safe map of (app, kind) to the newest update; reads take no lock."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._updates: dict[Key, TokenUpdate] = {}
        self._changed = threading.Condition()

    def offer(self, update: TokenUpdate) -> Offer:
        """Keep `update` if it is newer than what is held and not expired."""
        if not update.is_valid_at(self._clock()):
            return Offer.EXPIRED
        key = (update.app_id, update.kind)
        with self._changed:
            held = self._updates.get(key)
            if held is not None and held.version >= update.version:
                return Offer.STALE
            self._updates[key] = update
            self._changed.notify_all()
        return Offer.ACCEPTED

    def held(self, app_id: str, kind: TokenKind) -> TokenUpdate | None:
        """The newest update held, valid or not."""
        return self._updates.get((app_id, kind))

    def current(self, app_id: str, kind: TokenKind) -> TokenUpdate | None:
        """The held update if it has not expired: the hot path, no lock and no I/O."""
        update = self._updates.get((app_id, kind))
        if update is not None and self._clock() < update.expires_at:
            return update
        return None

    def wait_for(self, app_id: str, kind: TokenKind, timeout_s: float) -> TokenUpdate | None:
        """Wait up to `timeout_s` (monotonic) for a valid update; None if none came."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while True:
                update = self.current(app_id, kind)
                if update is not None:
                    return update
                remaining_s = deadline - time.monotonic()
                if remaining_s <= 0:
                    return None
                # Wake at least once a second: a held token may also simply expire.
                self._changed.wait(min(remaining_s, 1.0))

    def snapshot(self) -> dict[Key, TokenUpdate]:
        """A copy of everything held."""
        with self._changed:
            return dict(self._updates)
