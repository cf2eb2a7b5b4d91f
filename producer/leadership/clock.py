"""The clock that leases are trusted by: it never goes back and keeps counting while the host
is suspended.

`time.monotonic()` stops during a suspend (a paused VM, a laptop lid), so a producer that
wakes up would trust a lease that ran out in Redis long ago. Linux's `CLOCK_BOOTTIME`
counts the suspended time too; elsewhere (no `CLOCK_BOOTTIME`) `boottime` falls back to
`time.monotonic`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

_BOOTTIME: int | None = getattr(time, "CLOCK_BOOTTIME", None)


def boottime() -> float:
    """Seconds since boot, suspended time included (monotonic where the OS lacks it)."""
    if _BOOTTIME is None:
        return time.monotonic()
    return time.clock_gettime(_BOOTTIME)


#: True when `boottime` counts suspended time (Linux).
COUNTS_SUSPEND = _BOOTTIME is not None


class JumpProofDeadline:
    """Wall-clock deadlines (a token's refresh moment) that a wall clock set back cannot
    postpone.

    A producer whose clock ran ahead stamps its tokens' `expires_at` ahead too; once NTP
    sets the clock back, waiting for the wall clock to reach the refresh moment would wait
    the correction longer than the token lives. So each deadline is also anchored, when
    first asked for, on a clock that never jumps (`boottime`): `effective()` gives the
    earlier of the wall deadline and the anchored one, expressed on the wall clock. A jump
    forward only brings a refresh earlier, which costs one fetch at most.
    """

    __slots__ = ("_anchor_steady_s", "_anchor_wall_s", "_key", "_steady", "_wall")

    def __init__(self, wall: Callable[[], float], steady: Callable[[], float] = boottime) -> None:
        self._wall = wall
        self._steady = steady
        self._key: object = None
        self._anchor_wall_s = 0.0
        self._anchor_steady_s = 0.0

    def effective(self, key: object, at_s: float) -> float:
        """The wall-clock moment to act for the deadline `at_s` of `key` (e.g. a token's
        version and expiry; a new key re-anchors)."""
        now_wall_s, now_steady_s = self._wall(), self._steady()
        if key != self._key:
            self._key = key
            self._anchor_wall_s, self._anchor_steady_s = now_wall_s, now_steady_s
        steady_left_s = self._anchor_steady_s + (at_s - self._anchor_wall_s) - now_steady_s
        return min(at_s, now_wall_s + steady_left_s)
