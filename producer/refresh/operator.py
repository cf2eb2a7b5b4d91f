"""An operator's refresh (`wxtoken refresh [--force]`): judged by the leader, answered.

A signed `ControlRequest` (`refresh` or `force_refresh`) reaches the leader's
`ControlHandler`, which hands the credential's refresher an `OperatorRefresh` and wakes it.
On its next step the refresher (`OperatorRefreshing.handle`, before the reports)
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
from typing import TYPE_CHECKING, Protocol

from consumer_lib.wire.control import ControlAction, ControlRequest, ControlResult
from consumer_lib.wire.kinds import TokenKind
from producer.limits.budget import BudgetDecision, RefreshBudget
from producer.upstream.token_probe import ProbeVerdict, TokenProbe

if TYPE_CHECKING:  # the state module keeps each credential's `OperatorBox`
    from producer.refresh.state import CredentialState

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


class RefreshNow(Protocol):
    """Fetch the credential now (as its refresher's step would), `forced` or not."""

    def __call__(self, *, forced: bool, reason: str) -> None: ...


class OperatorRefreshing:
    """Judges the operator refreshes of every credential of one producer."""

    __slots__ = ("_budget", "_clock", "_probe")

    def __init__(
        self, *, budget: RefreshBudget | None, probe: TokenProbe | None, clock: Callable[[], float]
    ) -> None:
        self._budget = budget
        self._probe = probe
        self._clock = clock

    def refuse(self, cred: CredentialState, why: str) -> None:
        """Answer every operator refresh waiting for `cred` with a refusal."""
        for item in cred.operator.drain():
            item.answer(Verdict(ControlResult.REFUSED, why))

    def handle(self, cred: CredentialState, refresh: RefreshNow) -> None:
        """Judge and answer every operator refresh waiting for `cred`; `refresh` fetches
        (the refresher's own fetch, with what it does after)."""
        for item in cred.operator.drain():
            try:
                verdict = self._judge(cred, item, refresh)
            except Exception:
                log.exception("%s: operator refresh %s failed", cred.app.app_id, item.request)
                verdict = Verdict(ControlResult.FAILED, "unexpected error in the producer")
            item.answer(verdict)

    def _judge(self, cred: CredentialState, item: OperatorRefresh, refresh: RefreshNow) -> Verdict:
        request = item.request
        held = cred.held
        if held is None or not held.is_valid_at(self._clock()):
            return self._fetch_now(cred, item, refresh)
        seen = request.seen_version
        if not item.forced and seen is not None and held.version > seen:
            return Verdict(
                ControlResult.DONE,
                f"already replaced: v{held.version} is current (you saw v{seen})",
                held.version,
            )
        verdict = ProbeVerdict.UNKNOWN
        if not item.forced and cred.kind is TokenKind.ACCESS_TOKEN and self._probe is not None:
            verdict = self._probe.check(cred.app, held.value)
        if verdict is ProbeVerdict.ACCEPTED:
            return Verdict(
                ControlResult.REFUTED,
                f"upstream accepts v{held.version} {held.masked}: not replaced (--force "
                "rotates it anyway)",
                held.version,
            )
        refused = self._spend(cred, verified=verdict is ProbeVerdict.REFUSED)
        if refused is not None:
            return Verdict(ControlResult.OVER_BUDGET, refused.reason, held.version)
        how = "forced" if item.forced else f"requested ({verdict} upstream)"
        why = f": {request.reason}" if request.reason else ""
        log.warning(
            "%s: %s v%d %s by %s (key %s); refreshing it now",
            cred.app.app_id,
            cred.kind,
            held.version,
            how,
            request.operator,
            item.signer,
        )
        cred.stats.forced_refreshes += 1
        fetches, failures = cred.stats.fetches, cred.stats.fetch_failures
        refresh(
            forced=True,
            reason=(
                f"{how} by {request.operator} (key {item.signer}, request "
                f"{request.request_id[:8]}){why}"
            )[:256],
        )
        now_held = cred.held
        if now_held is not None and now_held.version != held.version:
            return Verdict(ControlResult.DONE, f"replaced: v{now_held.version}", now_held.version)
        if cred.stats.fetch_failures > failures:
            error = f"the fetch failed: {cred.stats.last_error}"
        elif cred.stats.fetches > fetches:
            error = "upstream handed back the same value (WeCom renews only once it expired)"
        else:
            error = (
                "not fetched now (the upstream rate cap, a pause after a quota error, or too "
                "little lease left): ask again"
            )
        return Verdict(ControlResult.FAILED, f"not replaced: {error}", held.version)

    def _fetch_now(
        self, cred: CredentialState, item: OperatorRefresh, refresh: RefreshNow
    ) -> Verdict:
        """Nothing valid held: fetch now instead of at the end of the failed fetch's backoff
        (no budget of ours: the quota of a credential that has none is every service's)."""
        request = item.request
        log.warning(
            "%s: no valid %s held; fetching now, asked by %s (key %s)",
            cred.app.app_id,
            cred.kind,
            request.operator,
            item.signer,
        )
        failures = cred.stats.fetch_failures
        refresh(forced=False, reason=f"asked by {request.operator} (key {item.signer}): none held")
        held = cred.held
        if held is not None and held.is_valid_at(self._clock()):
            return Verdict(ControlResult.DONE, f"fetched: v{held.version}", held.version)
        if cred.stats.fetch_failures > failures:
            return Verdict(ControlResult.FAILED, f"the fetch failed: {cred.stats.last_error}")
        return Verdict(
            ControlResult.FAILED,
            "not fetched now (the upstream rate cap, a pause after a quota error, or too "
            "little lease left): ask again",
        )

    def _spend(self, cred: CredentialState, *, verified: bool) -> BudgetDecision | None:
        """Spend our request-caused budget (access tokens) and WeChat's; the refusal, or
        None when both allow it (or none is kept)."""
        if self._budget is None:
            return None
        if cred.kind is TokenKind.ACCESS_TOKEN:
            ours = self._budget.try_spend_requested(
                cred.app.app_id, cred.app.token_api, verified=verified
            )
            if not ours.allowed:
                return ours
        upstream = cred.source.spend_on_report(cred.app, cred.kind)
        if upstream is not None and not upstream.allowed:
            return upstream
        return None
