"""What a `TokenClient` did with what it received: counters read by `stats_dict()` and the
metrics collector (`consumer_lib.metrics`)."""

from __future__ import annotations

import logging
import threading
from dataclasses import asdict, dataclass
from typing import Literal

from ._offset import ClockOffset
from ._rejections import rejection_reason
from .errors import InvalidUpdate

log = logging.getLogger(__name__)


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
        #: Rejected updates by reason (`_rejections.REASONS`), for metrics.
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


class StatsView:
    """`TokenClient`'s read-outs of its counters and clock offset (mixed in)."""

    _counters: ClientCounters
    _offset: ClockOffset

    def stats_dict(self) -> dict[str, int]:
        """A consistent copy of `stats`, with `clock_offset_ms` (this host's clock minus the
        producer's, as estimated; 0 before any message) and `invalid_sent_headers`."""
        return self._counters.stats_dict(self._offset)

    @property
    def clock_offset_s(self) -> float:
        """The offset applied to producer times (0 within the 1 s dead band)."""
        return self._offset.offset_s

    def rejections_dict(self) -> dict[str, int]:
        """A consistent copy of `rejections` (rejected updates by reason)."""
        return self._counters.rejections_dict()
