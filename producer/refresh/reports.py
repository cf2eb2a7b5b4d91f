"""Passive refresh: reports that a token was rejected upstream, collected and judged.

Reports (`RefreshRequest`s from `report_invalid()` and `wxtoken refresh`) arrive from the
request listener's thread at any time; `ReportBox` collects them by token fingerprint and
the refresher drains the box on its next step and `request_policy` decides:

- reports about a token that is no longer current only re-publish the current one;
- reports about the current token are checked upstream first, then refresh it once (a
  stable token with `force_refresh`) if the budgets allow, else re-publish and count;
  each kind spends its own budget (a ticket's reports never spend its access token's);
- reports that pile up during that fetch are about the old token by the time they are
  handled.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field

from consumer_lib.wire.refresh_request import RefreshRequest

#: An audit entry of a batch of reports names at most this many requesters.
AUDIT_NAMED_REQUESTERS = 3
#: Reports about one of a credential's last this many tokens are worth handling (the
#: current one, or older ones a late subscriber may still hold); any other fingerprint is
#: dropped before it is charged to its sender's allowance.
RECENT_TOKENS = 4


def fingerprint_digest(token: str) -> bytes:
    """The raw SHA-256 of `token` (32 bytes; `fingerprint()` is its hex form)."""
    return hashlib.sha256(token.encode()).digest()


@dataclass(slots=True)
class Batch:
    """Reports drained at once: count per token fingerprint, and some requesters."""

    counts: dict[str, int] = field(default_factory=dict)
    requesters: set[str] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.counts)


class ReportBox:
    """Thread-safe collection of reports for one credential; holds no batch until a
    report arrives (a fleet has tens of thousands of boxes, nearly all empty)."""

    __slots__ = ("_batch", "_lock", "received")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._batch: Batch | None = None
        self.received = 0

    def add(self, request: RefreshRequest) -> None:
        with self._lock:
            batch = self._batch
            if batch is None:
                batch = self._batch = Batch()
            batch.counts[request.token_sha256] = batch.counts.get(request.token_sha256, 0) + 1
            self.received += 1
            if len(batch.requesters) <= AUDIT_NAMED_REQUESTERS:
                batch.requesters.add(request.requester)

    def drain(self) -> Batch:
        with self._lock:
            batch, self._batch = self._batch, None
        return batch if batch is not None else Batch()

    def __bool__(self) -> bool:
        with self._lock:
            return self._batch is not None and bool(self._batch)


def named(requesters: set[str]) -> str:
    """The requesters of a batch for an audit entry, at most `AUDIT_NAMED_REQUESTERS`."""
    names = sorted(requesters)
    shown = ", ".join(names[:AUDIT_NAMED_REQUESTERS]) or "unknown"
    return shown + (" and others" if len(names) > AUDIT_NAMED_REQUESTERS else "")
