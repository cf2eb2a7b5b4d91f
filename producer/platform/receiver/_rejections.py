"""Refused pushes: counted by reason, logged at most once a minute per reason."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import get_args

from producer.platform.errors import RejectReason

log = logging.getLogger(__name__)

#: Every reason, so the counter shows zeros from the start (bounded label values).
REASONS: tuple[RejectReason, ...] = get_args(RejectReason)
#: Refusals of one reason are logged at most this often.
LOG_EVERY_S = 60.0


class Rejections:
    """Thread-safe counts of refused pushes, and their rate-limited log."""

    def __init__(
        self, *, clock: Callable[[], float] = time.monotonic, log_every_s: float = LOG_EVERY_S
    ) -> None:
        self._clock = clock
        self._log_every_s = log_every_s
        self._lock = threading.Lock()
        self.counts: dict[RejectReason, int] = dict.fromkeys(REASONS, 0)
        self._unlogged: dict[RejectReason, int] = dict.fromkeys(REASONS, 0)
        self._logged_at: dict[RejectReason, float] = dict.fromkeys(REASONS, -math.inf)

    def add(self, reason: RejectReason, component_appid: str) -> None:
        """Count one refusal; log it unless this reason was logged within the minute."""
        now = self._clock()
        with self._lock:
            self.counts[reason] += 1
            self._unlogged[reason] += 1
            if now - self._logged_at[reason] < self._log_every_s:
                return
            count, self._unlogged[reason], self._logged_at[reason] = self._unlogged[reason], 0, now
        # The path's appid is the sender's word: shown only when it has an appid's shape.
        shown = component_appid if component_appid.isalnum() and len(component_appid) <= 32 else "?"
        log.warning(
            "refused a push for platform %s: %s (%d refused for this reason since the last "
            "such line)",
            shown,
            reason,
            count,
        )
