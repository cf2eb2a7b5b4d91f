"""The in-memory token holder of a subscriber: the highest version wins, expiry is checked
on every read, and readers can wait for a token to arrive.

Expiry is local: an update's `expires_at` is the producer's clock, so the cache adds the
estimated offset of this host's clock (`ClockOffset.offset_s`, 0 when the clocks agree), or
uses the local deadline a snapshot read gave (`PTTL` counted from the reply). A pushed
update is also capped at its signed lifetime (`expires_at - issued_at`) counted from its
receipt here (less `SAFETY_S`), whatever the offset (which unsigned headers feed) says.

One exception to "highest version wins": when the held token has expired here, a valid
update with a lower version is taken (WARNING). That is what a writer with a slower clock
allocates after Redis lost its data; refusing it would leave the app without a token.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable

from ..wire.authorizers import split_authorizer_app_id
from ..wire.update import TokenKind, TokenUpdate
from .offset import ClockOffset
from .overdue import OverdueWatch

log = logging.getLogger(__name__)

Key = tuple[str, TokenKind]

#: Replaced moments the overdue heap may hold beyond two per held token.
OVERDUE_SLACK = 1024


class Offer(enum.Enum):
    """What became of an update offered to the cache."""

    ACCEPTED = "accepted"
    STALE = "stale"  # same or older version than the one held
    EXPIRED = "expired"  # already past its expires_at


class TokenCache:
    """Thread-safe map of (app, kind) to the newest update; reads take no lock."""

    def __init__(
        self, clock: Callable[[], float] = time.time, offset: ClockOffset | None = None
    ) -> None:
        self._clock = clock
        self._offset = offset or ClockOffset()
        self._updates: dict[Key, TokenUpdate] = {}
        #: Local deadlines of updates read from a snapshot (`PTTL`); others use the offset.
        self._deadlines: dict[Key, float] = {}
        #: The latest local expiry of pushed updates (receipt + signed lifetime).
        self._caps: dict[Key, float] = {}
        #: The hot path's view: (token value, local expiry) per key, replaced whole (one
        #: dict read and one clock read serve `get_token`), recomputed when the offset moves.
        self.entries: dict[Key, tuple[str, float]] = {}
        #: Authorizer appid -> the platform credential app ids held for it
        #: (`{component}.{authorizer}`): asking by the authorizer appid alone (`platforms_of`).
        self._platforms_of: dict[str, frozenset[str]] = {}
        self._overdue = OverdueWatch(self._updates)
        #: The offset moved since the watch was built: rebuilt at the next look, so a
        #: burst of offset changes costs one rebuild a second, not one per change.
        self._overdue_stale = False
        self._changed = threading.Condition()
        self._offset.on_change.append(self._reoffset)

    def renewed(self) -> TokenCache:
        """A new cache holding the same updates, with fresh locks (in a forked child, where
        only one thread runs: no lock taken)."""
        fresh = TokenCache(self._clock, self._offset)
        self._offset.on_change.remove(self._reoffset)
        fresh._updates = dict(self._updates)
        fresh._deadlines = dict(self._deadlines)
        fresh._caps = dict(self._caps)
        fresh.entries = dict(self.entries)
        fresh._platforms_of = dict(self._platforms_of)
        fresh._overdue = OverdueWatch(fresh._updates)
        fresh._overdue.rebuild(fresh._expiries())
        return fresh

    def expires_local(
        self, update: TokenUpdate, deadline_s: float | None = None, cap_s: float | None = None
    ) -> float:
        """When `update` expires on this host's clock: `deadline_s` when known, else
        `expires_at` + offset, never after `cap_s`."""
        if deadline_s is not None:
            return deadline_s
        expires_s = update.expires_at + self._offset.offset_s
        return expires_s if cap_s is None else min(expires_s, cap_s)

    def offer(
        self, update: TokenUpdate, *, deadline_s: float | None = None, cap_s: float | None = None
    ) -> Offer:
        """Keep `update` if it is newer than what is held and not expired. `deadline_s`:
        its local expiry when known (a snapshot's `PTTL`), else `expires_at` + offset, and
        never after `cap_s` (a pushed update: its receipt plus its signed lifetime)."""
        now_s = self._clock()
        if now_s >= self.expires_local(update, deadline_s, cap_s):
            return Offer.EXPIRED
        key = (update.app_id, update.kind)
        with self._changed:
            held = self._updates.get(key)
            if held is not None and held.version >= update.version:
                if held.version == update.version or now_s < self._held_expiry(key, held):
                    return Offer.STALE
                log.warning(
                    "took %s although older than the held v%d: that one has expired here "
                    "(a writer with a slower clock after Redis lost its data?)",
                    update,
                    held.version,
                )
            if held is None:
                self._index_authorizer(update.app_id)
            self._updates[key] = update
            if deadline_s is None:
                self._deadlines.pop(key, None)
            else:
                self._deadlines[key] = deadline_s
            if cap_s is None:
                self._caps.pop(key, None)
            else:
                self._caps[key] = cap_s
            expires_s = self.expires_local(update, deadline_s, cap_s)
            self.entries[key] = (update.value, expires_s)
            self._overdue.hold(key, update, expires_s)
            if self._overdue.moments > 2 * len(self._updates) + OVERDUE_SLACK:
                # Replaced moments leave the heap when they come due, at the looks; with
                # no looks (a stub transport), or many updates a lifetime, compact it here.
                self._overdue_stale = True
                self._rebuild_overdue()
            self._changed.notify_all()
        return Offer.ACCEPTED

    def _index_authorizer(self, app_id: str) -> None:
        split = split_authorizer_app_id(app_id)
        if split is not None:
            authorizer = split[1]
            self._platforms_of[authorizer] = self._platforms_of.get(authorizer, frozenset()) | {
                app_id
            }

    def platforms_of(self, authorizer_appid: str) -> frozenset[str]:
        """The platform credential app ids held for `authorizer_appid` (no lock, no I/O)."""
        return self._platforms_of.get(authorizer_appid, frozenset())

    def _reoffset(self) -> None:
        """The clock offset moved: recompute the local expiry of what has no deadline."""
        with self._changed:
            for key, update in self._updates.items():
                if key not in self._deadlines:
                    self.entries[key] = (update.value, self._held_expiry(key, update))
            self._overdue_stale = True

    def _rebuild_overdue(self) -> None:
        """Under the lock: rebuild the overdue watch if marked stale (the offset moved, or
        replaced moments piled up)."""
        if self._overdue_stale:
            self._overdue.rebuild(self._expiries())
            self._overdue_stale = False

    def _expiries(self) -> list[tuple[Key, TokenUpdate, float]]:
        return [(key, u, self._held_expiry(key, u)) for key, u in self._updates.items()]

    def _held_expiry(self, key: Key, held: TokenUpdate) -> float:
        return self.expires_local(held, self._deadlines.get(key), self._caps.get(key))

    def held(self, app_id: str, kind: TokenKind) -> TokenUpdate | None:
        """The newest update held, valid or not."""
        return self._updates.get((app_id, kind))

    def current(self, app_id: str, kind: TokenKind) -> TokenUpdate | None:
        """The held update if it has not expired: the hot path, no lock and no I/O."""
        key = (app_id, kind)
        update = self._updates.get(key)
        if update is not None and self._clock() < self._held_expiry(key, update):
            return update
        return None

    def valid(self, app_id: str, kind: TokenKind) -> tuple[TokenUpdate, float] | None:
        """The held update and its local expiry (the one `current` checks) while it has not
        expired: no lock and no I/O."""
        key = (app_id, kind)
        update = self._updates.get(key)
        if update is None:
            return None
        expires_s = self._held_expiry(key, update)
        return (update, expires_s) if self._clock() < expires_s else None

    def valid_count(self) -> int:
        """How many held updates have not expired on this host's clock."""
        now_s = self._clock()
        with self._changed:
            return sum(
                1 for key, update in self._updates.items() if now_s < self._held_expiry(key, update)
            )

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
                # Only `offer` makes a valid token appear, and it notifies.
                self._changed.wait(remaining_s)

    def snapshot(self) -> dict[Key, TokenUpdate]:
        """A copy of everything held."""
        with self._changed:
            return dict(self._updates)

    def any_overdue(self) -> bool:
        """True when a held token is in the last tenth of its life (at most 150 s) with no
        successor: a publish went missing (`OverdueWatch`); cheap however much is held."""
        now_s = self._clock()
        with self._changed:
            self._rebuild_overdue()
            return self._overdue.any_overdue(now_s)

    def seconds_left(self) -> dict[Key, tuple[TokenUpdate, float]]:
        """Everything held with its seconds left on this host's clock (negative: expired)."""
        now_s = self._clock()
        with self._changed:
            return {
                key: (update, self._held_expiry(key, update) - now_s)
                for key, update in self._updates.items()
            }
