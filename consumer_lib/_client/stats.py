"""What a `TokenClient` did with what it received: counters read by `stats_dict()` and the
metrics collector (`consumer_lib.metrics`), rejected updates counted by reason, one of a few
fixed words (a bounded metrics label)."""

from __future__ import annotations

import logging
import threading
from dataclasses import asdict, dataclass
from typing import Literal

from ..errors import InvalidUpdate
from .offset import ClockOffset

log = logging.getLogger(__name__)

#: (substring of the `InvalidUpdate` message, reason), first match wins.
_REASONS = (
    ("untrusted user", "untrusted_publisher"),
    ("unsigned", "unsigned"),
    ("unknown key", "unknown_key"),
    ("bad signature", "bad_signature"),
    ("exceed", "oversize"),
)
REASONS = (*(reason for _, reason in _REASONS), "malformed")


def rejection_reason(exc: InvalidUpdate) -> str:
    """Why an update was rejected: one of `REASONS`; anything not recognised is
    `malformed`."""
    text = str(exc)
    return next((reason for needle, reason in _REASONS if needle in text), "malformed")


@dataclass
class ClientStats:
    """What the client did with what it received; `rejected` are invalid bytes.

    The client counts under a lock; read a consistent copy with `TokenClient.stats_dict()`.
    """

    accepted: int = 0
    stale: int = 0
    expired: int = 0
    rejected: int = 0
    snapshot_reads: int = 0
    snapshot_failures: int = 0
    #: Updates whose signature was checked (a re-published copy of the bytes held is not).
    verified: int = 0


Counter = Literal[
    "accepted", "stale", "expired", "rejected", "snapshot_reads", "snapshot_failures", "verified"
]


class ClientCounters:
    """`ClientStats` and rejections by reason, counted under one lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.stats = ClientStats()
        #: Rejected updates by reason (`REASONS`), for metrics.
        self.rejections: dict[str, int] = {}

    def renew_lock(self) -> None:
        """In a forked child: a lock held by a parent thread would never be released."""
        self._lock = threading.Lock()

    def count(self, counter: Counter) -> None:
        with self._lock:
            setattr(self.stats, counter, getattr(self.stats, counter) + 1)

    def reject(self, what: str, exc: InvalidUpdate) -> None:
        """Count invalid bytes by reason and log why (never the token: the error has none)."""
        reason = rejection_reason(exc)
        with self._lock:
            self.stats.rejected += 1
            self.rejections[reason] = self.rejections.get(reason, 0) + 1
        log.warning("rejected %s: %s", what, exc)

    def stats_dict(self, offset: ClockOffset | None = None) -> dict[str, int]:
        """The counts, and with `offset` its estimate (`clock_offset_ms`, 0 before any
        message) and the new versions whose send time was garbage or outside their signed
        life (`invalid_sent_headers`)."""
        with self._lock:
            counts = asdict(self.stats)
        if offset is not None:
            counts["clock_offset_ms"] = offset.estimate_ms()
            counts["invalid_sent_headers"] = offset.invalid_headers
        return counts

    def rejections_dict(self) -> dict[str, int]:
        with self._lock:
            return dict(self.rejections)
