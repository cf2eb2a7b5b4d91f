"""Passive refresh: reports that a token was rejected upstream, collected and judged.

Reports (`RefreshRequest`s from `report_invalid()` and `wxtoken refresh`) arrive from the
request listener's thread at any time; `ReportBox` collects them by token fingerprint and
the refresher drains the box on its next step. `judge()` turns one drained batch into a
`Verdict`:

- reports about a token that is no longer current only re-publish the current one;
- reports about the current token refresh it once (a stable token with `force_refresh`),
  if the fleet-wide budget allows, else re-publish and count the refusal; each kind
  spends its own budget (a ticket's reports never spend its access token's);
- reports that pile up during that fetch are about the old token by the time they are
  handled.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from consumer_lib.wire.refresh_request import RefreshRequest, fingerprint
from consumer_lib.wire.update import TokenUpdate

from .budget import BudgetDecision

#: An audit entry of a batch of reports names at most this many requesters.
AUDIT_NAMED_REQUESTERS = 3


@dataclass
class Batch:
    """Reports drained at once: count per token fingerprint, and some requesters."""

    counts: dict[str, int] = field(default_factory=dict)
    requesters: set[str] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.counts)


class ReportBox:
    """Thread-safe collection of reports for one credential."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._batch = Batch()
        self.received = 0

    def add(self, request: RefreshRequest) -> None:
        with self._lock:
            counts = self._batch.counts
            counts[request.token_sha256] = counts.get(request.token_sha256, 0) + 1
            self.received += 1
            if len(self._batch.requesters) <= AUDIT_NAMED_REQUESTERS:
                self._batch.requesters.add(request.requester)

    def drain(self) -> Batch:
        with self._lock:
            batch, self._batch = self._batch, Batch()
        return batch

    def __bool__(self) -> bool:
        with self._lock:
            return bool(self._batch)


@dataclass(frozen=True)
class Verdict:
    """What to do about one batch of reports of `held`."""

    about_current: int
    about_old: int
    #: The audit reason of the `refresh_request` entry of the batch.
    summary: str
    #: Refresh now (forced), with this reason for the new token's audit entry.
    refresh_reason: str | None = None
    #: The budget said no: the reason, for the `request_over_budget` entry.
    over_budget: str | None = None
    decision: BudgetDecision | None = None


def judge(
    batch: Batch, held: TokenUpdate, *, spend: Callable[[], BudgetDecision | None]
) -> Verdict:
    """Decide what one drained batch asks for; `spend()` spends the credential's budget of
    one refresh (None: no budget kept) and is called only when a refresh is asked for."""
    counts = dict(batch.counts)
    about_current = counts.pop(fingerprint(held.value), 0)
    about_old = sum(counts.values())
    summary = (
        f"{about_current + about_old} report(s), {about_current} of the current token, "
        f"{about_old} of older ones; from {named(batch.requesters)}"
    )
    if not about_current:
        return Verdict(about_current, about_old, summary)
    decision = spend()
    if decision is None or decision.allowed:
        note = f"; {decision.reason}" if decision else ""
        return Verdict(
            about_current,
            about_old,
            summary,
            refresh_reason=f"reported rejected ({about_current} reports){note}",
            decision=decision,
        )
    return Verdict(
        about_current,
        about_old,
        summary,
        over_budget=f"reported rejected ({about_current} reports); {decision.reason}",
        decision=decision,
    )


def named(requesters: set[str]) -> str:
    """The requesters of a batch for an audit entry, at most `AUDIT_NAMED_REQUESTERS`."""
    names = sorted(requesters)
    shown = ", ".join(names[:AUDIT_NAMED_REQUESTERS]) or "unknown"
    return shown + (" and others" if len(names) > AUDIT_NAMED_REQUESTERS else "")
