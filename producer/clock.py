"""The clock that leases are trusted by: it never goes back and keeps counting while the host
is suspended.

`time.monotonic()` stops during a suspend (a paused VM, a laptop lid), so a producer that
wakes up would trust a lease that ran out in Redis long ago. Linux's `CLOCK_BOOTTIME`
counts the suspended time too; elsewhere (no `CLOCK_BOOTTIME`) `boottime` falls back to
`time.monotonic`.
"""

from __future__ import annotations

import time

_BOOTTIME: int | None = getattr(time, "CLOCK_BOOTTIME", None)


def boottime() -> float:
    """Seconds since boot, suspended time included (monotonic where the OS lacks it)."""
    if _BOOTTIME is None:
        return time.monotonic()
    return time.clock_gettime(_BOOTTIME)


#: True when `boottime` counts suspended time (Linux).
COUNTS_SUSPEND = _BOOTTIME is not None
