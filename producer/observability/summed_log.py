"""A warning a flood can cause, logged at most once a period with the count it stands for.

Anyone holding a consumer's broker login can send the producers garbage; each message is
counted (metrics), but a WARNING per message would flood every producer's log. A
`SummedWarning` logs the first occurrence at once, then at most one line every `every_s`,
ending with how many occurrences since the last line were not logged. Thread-safe.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable

#: Lines of one kind at most this often (seconds).
EVERY_S = 60.0


class SummedWarning:
    """One kind of warning, logged at most once every `every_s`."""

    def __init__(
        self,
        logger: logging.Logger,
        *,
        every_s: float = EVERY_S,
        clock: Callable[[], float] = time.monotonic,
        level: int = logging.WARNING,
    ) -> None:
        self._log = logger
        self._every_s = every_s
        self._clock = clock
        self._level = level
        self._lock = threading.Lock()
        self._logged_at = -math.inf
        self._unlogged = 0

    def note(self, message: str, *args: object) -> bool:
        """Count one occurrence; log it (True) unless a line was logged within `every_s`."""
        now_s = self._clock()
        with self._lock:
            if now_s - self._logged_at < self._every_s:
                self._unlogged += 1
                return False
            unlogged, self._unlogged, self._logged_at = self._unlogged, 0, now_s
        if unlogged:
            self._log.log(
                self._level,
                message + " (and %d more like it since the last such line)",
                *args,
                unlogged,
            )
        else:
            self._log.log(self._level, message, *args)
        return True
