"""An operator's refresh (`wxtoken refresh [--force]`): judged by the leader, answered.

A signed `ControlRequest` (`refresh` or `force_refresh`) reaches the leader's
`ControlHandler`, which hands the credential's refresher an `OperatorRefresh` and wakes it.
On its next step the refresher (`OperatorRefreshing._handle_operator`, before the reports)
decides, and calls the request's `answer` with a `Verdict`:

- `refresh`: the version the operator saw was replaced since → done (that version).
  Otherwise the token is checked upstream (`TokenProbe`, access tokens): accepted →
  refuted, nothing spent. Refused or no verdict → as `--force`.
- `force_refresh` (a leaked token): no check. Both spend what a report-caused refresh
  spends: our request-caused budget (access tokens: `RefreshBudget.try_spend_requested`)
  and WeChat's (`CredentialSource.spend_on_report`: the stable API's 20 forced a day, 30 s
  apart; the classic count; a ticket's own). Either refuses → over budget, with its reason.
- then one forced refresh (the stable API's `force_refresh`), audited as `forced_refresh`
  with the operator in its reason: done with the new version, or failed with the error.

Nothing valid held: the fetch is tried at once, cutting the failed fetch's backoff short
(an operator's "try now", say after the IP whitelist was fixed): done with the new version,
or failed with the upstream error. The box is bounded: a flood of signed requests cannot
grow memory.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from consumer_lib.wire.control import ControlAction, ControlRequest, ControlResult
from consumer_lib.wire.kinds import TokenKind
from consumer_lib.wire.update import TokenUpdate
from producer.apps import AppConfig
from producer.limits.budget import BudgetDecision, RefreshBudget
from producer.refresh.sources import CredentialSource
from producer.refresh.stats import RefresherStats
from producer.upstream.token_probe import ProbeVerdict, TokenProbe

log = logging.getLogger(__name__)

#: Operator refreshes waiting for one credential's step, at most.
MAX_PENDING = 8


@dataclass(frozen=True)
class Verdict:
    """How the leader ended an operator's refresh."""

    result: ControlResult
    message: str
    version: int | None = None


@dataclass(frozen=True)
class OperatorRefresh:
    """One verified request, and where its verdict goes."""

    request: ControlRequest
    signer: str
    answer: Callable[[Verdict], None]

    @property
    def forced(self) -> bool:
        return self.request.action is ControlAction.FORCE_REFRESH


class OperatorBox:
    """Thread-safe queue of operator refreshes for one credential (empty for nearly all)."""

    __slots__ = ("_items", "_lock")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[OperatorRefresh] | None = None

    def add(self, item: OperatorRefresh) -> bool:
        """Queue `item`; False when `MAX_PENDING` already wait."""
        with self._lock:
            if self._items is None:
                self._items = []
            if len(self._items) >= MAX_PENDING:
                return False
            self._items.append(item)
            return True

    def drain(self) -> list[OperatorRefresh]:
        with self._lock:
            items, self._items = self._items or [], None
            return items

    def __bool__(self) -> bool:
        return self._items is not None


class OperatorRefreshing:
    """Operator refreshes of one credential; mixed into `AppRefresher`."""

    if not TYPE_CHECKING:  # the state is in `AppRefresher`'s slots (mypy checks those)
        __slots__ = ()
    app: AppConfig
    kind: TokenKind
    stats: RefresherStats
    _operator: OperatorBox
    _budget: RefreshBudget | None
    _source: CredentialSource
    _probe: TokenProbe | None
    _held: TokenUpdate | None
    _clock: Callable[[], float]

    if TYPE_CHECKING:  # in `Fetching` and `AppRefresher`: stubs here would shadow them

        def _refresh(self, *, forced: bool = False, reason: str = "scheduled") -> None: ...

    def operator_refresh(self, item: OperatorRefresh) -> bool:
        """Queue an operator's refresh for the next step; thread-safe. False (and nothing
        queued) when too many wait already."""
        return self._operator.add(item)

    def _refuse_operator(self, why: str) -> None:
        for item in self._operator.drain():
            item.answer(Verdict(ControlResult.REFUSED, why))

    def _handle_operator(self) -> None:
        for item in self._operator.drain():
            try:
                verdict = self._judge_operator(item)
            except Exception:
                log.exception("%s: operator refresh %s failed", self.app.app_id, item.request)
                verdict = Verdict(ControlResult.FAILED, "unexpected error in the producer")
            item.answer(verdict)

    def _judge_operator(self, item: OperatorRefresh) -> Verdict:
        request = item.request
        held = self._held
        if held is None or not held.is_valid_at(self._clock()):
            return self._fetch_for_operator(item)
        seen = request.seen_version
        if not item.forced and seen is not None and held.version > seen:
            return Verdict(
                ControlResult.DONE,
                f"already replaced: v{held.version} is current (you saw v{seen})",
                held.version,
            )
        verdict = ProbeVerdict.UNKNOWN
        if not item.forced and self.kind is TokenKind.ACCESS_TOKEN and self._probe is not None:
            verdict = self._probe.check(self.app, held.value)
        if verdict is ProbeVerdict.ACCEPTED:
            return Verdict(
                ControlResult.REFUTED,
                f"upstream accepts v{held.version} {held.masked}: not replaced (--force "
                "rotates it anyway)",
                held.version,
            )
        refused = self._spend_for_operator(verified=verdict is ProbeVerdict.REFUSED)
        if refused is not None:
            return Verdict(ControlResult.OVER_BUDGET, refused.reason, held.version)
        how = "forced" if item.forced else f"requested ({verdict} upstream)"
        why = f": {request.reason}" if request.reason else ""
        log.warning(
            "%s: %s v%d %s by %s (key %s); refreshing it now",
            self.app.app_id,
            self.kind,
            held.version,
            how,
            request.operator,
            item.signer,
        )
        self.stats.forced_refreshes += 1
        fetches, failures = self.stats.fetches, self.stats.fetch_failures
        self._refresh(
            forced=True,
            reason=(
                f"{how} by {request.operator} (key {item.signer}, request "
                f"{request.request_id[:8]}){why}"
            )[:256],
        )
        now_held = self._held
        if now_held is not None and now_held.version != held.version:
            return Verdict(ControlResult.DONE, f"replaced: v{now_held.version}", now_held.version)
        if self.stats.fetch_failures > failures:
            error = f"the fetch failed: {self.stats.last_error}"
        elif self.stats.fetches > fetches:
            error = "upstream handed back the same value (WeCom renews only once it expired)"
        else:
            error = (
                "not fetched now (the upstream rate cap, a pause after a quota error, or too "
                "little lease left): ask again"
            )
        return Verdict(ControlResult.FAILED, f"not replaced: {error}", held.version)

    def _fetch_for_operator(self, item: OperatorRefresh) -> Verdict:
        """Nothing valid held: fetch now instead of at the end of the failed fetch's backoff
        (no budget of ours: the quota of a credential that has none is every service's)."""
        request = item.request
        log.warning(
            "%s: no valid %s held; fetching now, asked by %s (key %s)",
            self.app.app_id,
            self.kind,
            request.operator,
            item.signer,
        )
        failures = self.stats.fetch_failures
        self._refresh(reason=f"asked by {request.operator} (key {item.signer}): none held")
        held = self._held
        if held is not None and held.is_valid_at(self._clock()):
            return Verdict(ControlResult.DONE, f"fetched: v{held.version}", held.version)
        if self.stats.fetch_failures > failures:
            return Verdict(ControlResult.FAILED, f"the fetch failed: {self.stats.last_error}")
        return Verdict(
            ControlResult.FAILED,
            "not fetched now (the upstream rate cap, a pause after a quota error, or too "
            "little lease left): ask again",
        )

    def _spend_for_operator(self, *, verified: bool) -> BudgetDecision | None:
        """Spend our request-caused budget (access tokens) and WeChat's; the refusal, or
        None when both allow it (or none is kept)."""
        if self._budget is None:
            return None
        if self.kind is TokenKind.ACCESS_TOKEN:
            ours = self._budget.try_spend_requested(
                self.app.app_id, self.app.token_api, verified=verified
            )
            if not ours.allowed:
                return ours
        upstream = self._source.spend_on_report(self.app, self.kind)
        if upstream is not None and not upstream.allowed:
            return upstream
        return None
