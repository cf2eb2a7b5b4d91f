"""What one credential is fetched from: the strategy an `AppRefresher` calls for its one
upstream call. Every credential is scheduled, versioned, stored, signed and published the
same way; only this differs:

    AppTokenSource    an app's access token (or a platform's component token): the app's
                      secret through the producer's fetcher; spends the fleet-wide budget
    TicketSource      a ticket (jsapi, wx_card, WeCom's corp_jsapi and agent_config): fetched
                      with the access token the app's token refresher holds now; waits for
                      one without spending anything; a refused token goes through that
                      refresher's passive refresh once; WeCom's tickets spend the fleet-wide
                      hourly `TicketBudget`; a report spends the ticket's own daily count
    AuthorizerSource  a third-party platform authorizer's token: fetched with its platform's
                      component token (`AuthorizerTokens`, the refresh token from the
                      registry); waits for a component token; a refused one goes through the
                      component refresher's passive refresh once

A source is made for one credential (it holds whether that credential waits for what it
fetches with). `Components` finds each platform's component-token refresher.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Protocol

from consumer_lib.wire.kinds import Platform, TokenKind
from consumer_lib.wire.update import TokenUpdate
from producer.app_config import AppConfig
from producer.limits.budget import BudgetDecision, RefreshBudget
from producer.limits.ticket_budget import TicketBudget
from producer.ports import AuthorizerTokens, Fetcher
from producer.upstream.errcodes import FailureKind
from producer.upstream.errors import FetchedToken, UpstreamError
from producer.upstream.tickets import RefreshToken, TicketFetcher, call_with_token, fetch_ticket

log = logging.getLogger(__name__)

#: Without an access token to fetch with, a ticket looks again this often.
NO_TOKEN_RETRY_S = 0.5
#: Without a component token to fetch with, an authorizer looks again this often (it is
#: also woken when one arrives): 10,000 of them must not spin while a platform's ticket
#: is missing.
NO_COMPONENT_TOKEN_RETRY_S = 5.0


class CredentialSource(Protocol):
    """What a refresher's step asks of the credential's upstream side."""

    #: True while the credential waits for what it is fetched with (a step set it).
    waiting: bool

    def ready(self, app: AppConfig, now_s: float) -> bool:
        """Whether a fetch has what it needs now; no side effects."""
        ...

    def held_off_until(self, app: AppConfig, kind: TokenKind, now_s: float) -> float | None:
        """When a call may be made if not now (sets `waiting`); None: now."""
        ...

    def fetch(self, app: AppConfig, kind: TokenKind, *, force_refresh: bool) -> FetchedToken:
        """The one upstream call of a refresh; `UpstreamError` with its kind."""
        ...

    def count_fetch(self, app: AppConfig, *, forced: bool) -> None:
        """Count a fetch nobody asked for (requests spend their own)."""
        ...

    def spend_on_report(self, app: AppConfig, kind: TokenKind) -> BudgetDecision | None:
        """Spend what a report-caused refresh costs; None: nothing is counted."""
        ...


class Clock(Protocol):
    def __call__(self) -> float: ...


class HeldToken(Protocol):
    """The refresher of the token a credential is fetched with (`AppRefresher`)."""

    @property
    def held(self) -> TokenUpdate | None: ...

    def refresh_refused(self, refused: str) -> str | None: ...


def _valid_value(refresher: HeldToken | None, now_s: float) -> str | None:
    held = None if refresher is None else refresher.held
    return held.value if held is not None and held.is_valid_at(now_s) else None


@dataclass(slots=True)
class AppTokenSource:
    """An app's access token, or a platform's component token (its fetcher)."""

    fetcher: Fetcher
    budget: RefreshBudget | None = None
    waiting: bool = False

    def ready(self, app: AppConfig, now_s: float) -> bool:
        return True

    def held_off_until(self, app: AppConfig, kind: TokenKind, now_s: float) -> float | None:
        return None

    def fetch(self, app: AppConfig, kind: TokenKind, *, force_refresh: bool) -> FetchedToken:
        return self.fetcher.fetch(app, force_refresh=force_refresh)

    def count_fetch(self, app: AppConfig, *, forced: bool) -> None:
        if self.budget is not None and not forced:
            self.budget.record_fetch(app.app_id, app.token_api)

    def spend_on_report(self, app: AppConfig, kind: TokenKind) -> BudgetDecision | None:
        """The access token's forced (stable) or classic count."""
        return None if self.budget is None else self.budget.try_spend(app.app_id, app.token_api)


@dataclass(slots=True)
class TicketSource:
    """A ticket of an app, fetched with the app's access token (module docstring)."""

    token: HeldToken
    tickets: TicketFetcher
    clock: Clock
    ticket_budget: TicketBudget | None = None
    budget: RefreshBudget | None = None
    waiting: bool = False

    def ready(self, app: AppConfig, now_s: float) -> bool:
        return _valid_value(self.token, now_s) is not None

    def held_off_until(self, app: AppConfig, kind: TokenKind, now_s: float) -> float | None:
        self.waiting = not self.ready(app, now_s)
        if self.waiting:
            return now_s + NO_TOKEN_RETRY_S  # nothing to fetch with yet: spend nothing
        if self.ticket_budget is None or app.platform is not Platform.WECOM:
            return None
        decision = self.ticket_budget.try_spend(app, kind)
        if decision.allowed:
            return None
        retry_at_s = decision.retry_at_s if decision.retry_at_s is not None else now_s + 60.0
        log.warning(
            "%s: %s over WeCom's hourly ticket limit (%s); next call in %.0f s",
            app.app_id,
            kind,
            decision.reason,
            retry_at_s - now_s,
        )
        return max(retry_at_s, now_s + NO_TOKEN_RETRY_S)

    def fetch(self, app: AppConfig, kind: TokenKind, *, force_refresh: bool) -> FetchedToken:
        del force_refresh  # a ticket API has no forced mode
        return fetch_ticket(
            self.tickets,
            app,
            kind,
            access_token=_valid_value(self.token, self.clock()),
            refresh_token=self.token.refresh_refused,
        )

    def count_fetch(self, app: AppConfig, *, forced: bool) -> None:
        """A ticket call spends no token budget (WeCom's tickets spend `TicketBudget`)."""

    def spend_on_report(self, app: AppConfig, kind: TokenKind) -> BudgetDecision | None:
        """The ticket's own count of this kind, never the access token's budget."""
        return None if self.budget is None else self.budget.try_spend_ticket(app.app_id, kind)


class Components:
    """The component-token refresher of each platform, by component appid; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_appid: dict[str, HeldToken] = {}

    def register(self, component_appid: str, refresher: HeldToken) -> None:
        with self._lock:
            self._by_appid[component_appid] = refresher

    def get(self, component_appid: str) -> HeldToken | None:
        with self._lock:
            return self._by_appid.get(component_appid)


@dataclass(slots=True)
class AuthorizerSource:
    """A platform authorizer's token, fetched with its platform's component token."""

    components: Components
    tokens: AuthorizerTokens
    clock: Clock
    budget: RefreshBudget | None = None
    waiting: bool = False

    def _component(self, app: AppConfig) -> HeldToken | None:
        if app.component_appid is None:
            raise UpstreamError(f"{app.app_id} is not an authorizer", kind=FailureKind.CONFIG)
        return self.components.get(app.component_appid)

    def ready(self, app: AppConfig, now_s: float) -> bool:
        return _valid_value(self._component(app), now_s) is not None

    def held_off_until(self, app: AppConfig, kind: TokenKind, now_s: float) -> float | None:
        self.waiting = not self.ready(app, now_s)
        return now_s + NO_COMPONENT_TOKEN_RETRY_S if self.waiting else None

    def fetch(self, app: AppConfig, kind: TokenKind, *, force_refresh: bool) -> FetchedToken:
        del kind, force_refresh  # api_authorizer_token has no forced mode
        component = self._component(app)
        if component is None:
            raise UpstreamError(
                f"{app.app_id}: its platform is not served here", kind=FailureKind.CONFIG
            )
        refresh: RefreshToken = component.refresh_refused
        return call_with_token(
            lambda token: self.tokens.authorizer_token(app, token),
            what=app.app_id,
            using="the component token",
            token=_valid_value(component, self.clock()),
            refresh_token=refresh,
        )

    def count_fetch(self, app: AppConfig, *, forced: bool) -> None:
        if self.budget is not None and not forced:
            self.budget.record_fetch(app.app_id, app.token_api)

    def spend_on_report(self, app: AppConfig, kind: TokenKind) -> BudgetDecision | None:
        return None if self.budget is None else self.budget.try_spend(app.app_id, app.token_api)
