"""Which held tokens are overdue: in the last tenth of their life (at most 150 s) with no
successor pushed. The producer refreshes earlier, so an overdue token means a publish went
missing, and the subscriber reads Redis for the successor.

The subscriber asks once a second. Looking over every held token each time cost a
subscriber of 30,000 credentials about a third of its CPU, so the watch keeps a heap of
the moments held tokens enter that window and looks only at those that came due: a token
replaced before its moment (the usual case) is dropped from the heap when the moment
passes. A token dead for longer than its lifetime (an app no longer served) stops counting.

Not thread-safe: its owner (`TokenCache`) calls it under its lock.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable

from ..wire.update import TokenKind, TokenUpdate

#: A held token this close to expiry (share of its lifetime, capped) with no successor
#: pushed makes the subscriber read the Redis snapshot; the producer refreshes earlier.
OVERDUE_SHARE = 0.1
OVERDUE_MAX_S = 150.0

Key = tuple[str, TokenKind]


def overdue_window(update: TokenUpdate, expires_local_s: float) -> tuple[float, float]:
    """(from, until) on this host's clock: while a held `update` is overdue."""
    lifetime_s = update.expires_at - update.issued_at
    return (
        expires_local_s - min(OVERDUE_SHARE * lifetime_s, OVERDUE_MAX_S),
        expires_local_s + lifetime_s,
    )


class OverdueWatch:
    """Held updates by the moment they become overdue; `held` is the owner's map of what
    it holds (read, never changed here)."""

    def __init__(self, held: dict[Key, TokenUpdate]) -> None:
        # (overdue from, tie-breaker, key, update, overdue until); an entry whose update is
        # no longer the held one is stale and dropped when it comes due.
        self._due: list[tuple[float, int, Key, TokenUpdate, float]] = []
        self._pushed = 0
        self._held = held
        #: Overdue now: key -> (update, until).
        self._overdue: dict[Key, tuple[TokenUpdate, float]] = {}

    def hold(self, key: Key, update: TokenUpdate, expires_local_s: float) -> None:
        """`update` is now the one held for `key`, expiring at `expires_local_s` here."""
        self._overdue.pop(key, None)
        from_s, until_s = overdue_window(update, expires_local_s)
        self._pushed += 1
        heapq.heappush(self._due, (from_s, self._pushed, key, update, until_s))

    @property
    def moments(self) -> int:
        """Moments in the heap, replaced ones included (they leave when they come due)."""
        return len(self._due)

    def rebuild(self, expiries: Iterable[tuple[Key, TokenUpdate, float]]) -> None:
        """Every held update with its (new) local expiry: after the clock offset moved."""
        due = []
        for key, update, expires_local_s in expiries:
            from_s, until_s = overdue_window(update, expires_local_s)
            self._pushed += 1
            due.append((from_s, self._pushed, key, update, until_s))
        heapq.heapify(due)
        self._due = due
        self._overdue = {}

    def any_overdue(self, now_s: float) -> bool:
        """True when a held token is overdue at `now_s` (this host's clock)."""
        due = self._due
        while due and due[0][0] <= now_s:
            _, _, key, update, until_s = heapq.heappop(due)
            if self._held.get(key) is update:  # else replaced before it came due
                self._overdue[key] = (update, until_s)
        if self._overdue:
            for key in [k for k, (_, until_s) in self._overdue.items() if until_s <= now_s]:
                del self._overdue[key]
        return bool(self._overdue)
