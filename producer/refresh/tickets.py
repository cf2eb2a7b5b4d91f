"""Keeping one ticket of an app fresh: an `AppRefresher` of another kind.

A ticket (jsapi, wx_card, WeCom's corp_jsapi and agent_config) is scheduled, stored,
versioned and published exactly like the access token, under its own kind, on its own
``expires_in``. What differs is the upstream call:
- it is made with the access token the app's token refresher holds now; without one
  (start-up, an upstream outage) it waits for it, spending nothing;
- a refused token (40001/40014/42001, WeCom's 301002) goes through the token refresher's
  passive-refresh path once (`AppRefresher.refresh_refused`), never waiting on its lock;
- a WeCom ticket spends from the fleet-wide hourly `TicketBudget` first, and waits until
  the budget allows it when refused;
- a report of the ticket (`report_invalid(..., kind=)`) spends the ticket's own daily
  count (`RefreshBudget.try_spend_ticket`), never the access token's budget.
A token refresh never touches the tickets: a ticket stays valid until its own expiry.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from consumer_lib.wire.kinds import Platform, TokenKind
from producer.app_config import AppConfig
from producer.limits.budget import BudgetDecision
from producer.limits.ticket_budget import TicketBudget
from producer.refresh.refresher import AppRefresher
from producer.upstream.errors import FetchedToken
from producer.upstream.tickets import TicketFetcher, fetch_ticket

log = logging.getLogger(__name__)

#: Without an access token to fetch with, a ticket looks again this often.
NO_TOKEN_RETRY_S = 0.5


@dataclass(slots=True)
class _TicketSource:
    """What a ticket is fetched with."""

    token: AppRefresher
    tickets: TicketFetcher
    budget: TicketBudget | None
    waiting_for_token: bool = False


class TicketRefresher(AppRefresher):
    """The refresh state machine of one ticket of one app."""

    __slots__ = ("_source",)

    def __init__(
        self,
        app: AppConfig,
        *,
        kind: TokenKind,
        token: AppRefresher,
        tickets: TicketFetcher,
        ticket_budget: TicketBudget | None = None,
        **kwargs: Any,
    ) -> None:
        if kind is TokenKind.ACCESS_TOKEN:
            raise ValueError("a TicketRefresher keeps a ticket, not the access token")
        super().__init__(app, kind=kind, **kwargs)
        self._source = _TicketSource(token, tickets, ticket_budget)

    @property
    def token_refresher(self) -> AppRefresher:
        return self._source.token

    def token_arrived(self) -> None:
        """The token refresher holds a token now: a ticket waiting for one may fetch at its
        next step (the service wakes it) instead of at its next look."""
        if self._source.waiting_for_token:
            self._retry_at = 0.0

    def _can_fetch(self, now_s: float) -> bool:
        token = self._source.token.held
        return token is not None and token.is_valid_at(now_s)

    def _held_off_until(self, now_s: float) -> float | None:
        self._source.waiting_for_token = not self._can_fetch(now_s)
        if self._source.waiting_for_token:
            return now_s + NO_TOKEN_RETRY_S  # nothing to fetch with yet: spend nothing
        if self._source.budget is None or self.app.platform is not Platform.WECOM:
            return None
        decision = self._source.budget.try_spend(self.app, self.kind)
        if decision.allowed:
            return None
        retry_at_s = decision.retry_at_s if decision.retry_at_s is not None else now_s + 60.0
        log.warning(
            "%s: %s over WeCom's hourly ticket limit (%s); next call in %.0f s",
            self.app.app_id,
            self.kind,
            decision.reason,
            retry_at_s - now_s,
        )
        return max(retry_at_s, now_s + NO_TOKEN_RETRY_S)

    def _call_upstream(self, app: AppConfig, *, force_refresh: bool) -> FetchedToken:
        del force_refresh  # a ticket API has no forced mode
        token = self._source.token.held
        now_s = self._clock()
        access_token = token.value if token is not None and token.is_valid_at(now_s) else None
        return fetch_ticket(
            self._source.tickets,
            app,
            self.kind,
            access_token=access_token,
            refresh_token=self._source.token.refresh_refused,
        )

    def _count_fetch(self, *, forced: bool) -> None:
        """A ticket call spends no token budget (WeCom's tickets spend `TicketBudget`)."""

    def _spend_on_report(self) -> BudgetDecision | None:
        """A report of this ticket spends the ticket's own count of this kind, never the
        access token's forced or classic budget."""
        if self._budget is None:
            return None
        return self._budget.try_spend_ticket(self.app.app_id, self.kind)
