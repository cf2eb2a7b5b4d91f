"""The refreshers of each app's credentials, and the task the scheduler runs for each.

`CredentialRefreshers.of_app(app)` makes one `AppRefresher` for the access token and one per
ticket, each with the `CredentialSource` it is fetched from (`sources`), all sharing the
producer's fetcher, store, publisher, lease gate, budgets, audit trail and upstream gate
(`Fleet` calls it for every app it adds).
`scheduled_step(refresher, ...)` is what a worker runs when the credential is due.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

from consumer_lib.wire.update import TokenKind, TokenUpdate
from producer.apps import AppConfig, TokenApi
from producer.fleet import Fleet
from producer.leadership.lease import Leadership
from producer.limits.budget import RefreshBudget
from producer.limits.ticket_budget import TicketBudget
from producer.ports import AuthorizerTokens
from producer.refresh.refresher import AppRefresher, Fetcher, RefreshKit
from producer.refresh.sources import (
    AppTokenSource,
    AuthorizerSource,
    Components,
    CredentialSource,
    TicketSource,
)
from producer.refresh.timing import RefreshTiming, republish_phase_s
from producer.scheduler import Scheduler
from producer.store.audit import AuditLog
from producer.store.tokens import TokenStore
from producer.store.upstream_failures import UpstreamErrors
from producer.upstream.gate import UpstreamGate
from producer.upstream.tickets import TicketFetcher
from producer.upstream.token_probe import TokenProbe

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class CredentialRefreshers:
    """Makes the refreshers of an app's credentials (`of_app`), from shared parts."""

    fetcher: Fetcher
    store: TokenStore
    publish: Callable[[TokenUpdate], None]
    producer_id: str
    timing: RefreshTiming
    gate: Leadership
    budget: RefreshBudget
    clock: Callable[[], float]
    audit: AuditLog
    upstream_errors: UpstreamErrors
    upstream: UpstreamGate
    probe: TokenProbe | None
    ticket_budget: TicketBudget
    #: Third-party platforms: what fetches component and authorizer tokens (None: no
    #: platform served), and each platform's component-token refresher.
    platform_tokens: Fetcher | None = None
    authorizer_tokens: AuthorizerTokens | None = None
    components: Components = field(default_factory=Components)
    #: The parts every credential's refresher shares (made from the fields above).
    kit: RefreshKit = field(init=False)

    def __post_init__(self) -> None:
        kit = RefreshKit.build(
            store=self.store,
            publish=self.publish,
            producer_id=self.producer_id,
            timing=self.timing,
            gate=self.gate,
            budget=self.budget,
            clock=self.clock,
            audit=self.audit,
            upstream=self.upstream,
            follows_store=False,  # the service's `SnapshotFollower` reads in batches
            probe=self.probe,
            on_fetch_failed=self.upstream_errors.record,
            on_refused=self.upstream_errors.record_refused,
        )
        object.__setattr__(self, "kit", kit)  # frozen: set once, here

    @property
    def _tickets(self) -> TicketFetcher | None:
        """What fetches tickets (`Upstream`, or the meter around it); None: a fetcher made
        for tokens only (tests), whose apps' tickets are not kept."""
        fetcher = self.fetcher
        return cast(TicketFetcher, fetcher) if hasattr(fetcher, "fetch_ticket") else None

    def of_app(self, app: AppConfig) -> list[AppRefresher]:
        """One refresher per credential of `app`, the access token first (`credentials`)."""
        token = self._token_refresher(app)
        made = [token]
        tickets = self._tickets
        if app.tickets and tickets is None:
            log.warning("%s: this fetcher fetches no tickets; they are not kept", app.app_id)
            return made
        for credential in app.credentials[1:]:
            assert tickets is not None
            source = TicketSource(
                token, tickets, self.clock, ticket_budget=self.ticket_budget, budget=self.budget
            )
            made.append(self._refresher(app, credential.kind, source))
        return made

    def _token_refresher(self, app: AppConfig) -> AppRefresher:
        """The access token's refresher: a platform's component token fetches through
        `platform_tokens`, an authorizer's token through `authorizer_tokens` with it."""
        source: CredentialSource = AppTokenSource(self.fetcher, self.budget)
        if app.token_api is TokenApi.COMPONENT:
            if self.platform_tokens is None:
                raise ValueError(f"{app.app_id}: no platform is served by this producer")
            source = AppTokenSource(self.platform_tokens, self.budget)
        elif app.token_api is TokenApi.AUTHORIZER:
            if self.authorizer_tokens is None:
                raise ValueError(f"{app.app_id}: no platform is served by this producer")
            source = AuthorizerSource(
                self.components, self.authorizer_tokens, self.clock, budget=self.budget
            )
        refresher = self._refresher(app, TokenKind.ACCESS_TOKEN, source)
        if app.token_api is TokenApi.COMPONENT:
            self.components.register(app.app_id, refresher)
        return refresher

    def _refresher(self, app: AppConfig, kind: TokenKind, source: CredentialSource) -> AppRefresher:
        phase_s = republish_phase_s(app.app_id, kind, self.timing.republish_interval_s)
        return AppRefresher(app, self.kit, kind=kind, source=source, republish_phase_s=phase_s)


def scheduled_step(
    refresher: AppRefresher, fleet: Fleet, scheduler: Scheduler
) -> Callable[[], float]:
    """The scheduled task of a credential: its step; a token's step also wakes its
    app's tickets that wait for a token (start-up), so they need not poll for it, and a
    component token's wakes its platform's authorizers that wait for it."""
    if refresher.app.token_api is TokenApi.COMPONENT:
        return _component_step(refresher, fleet, scheduler)
    if refresher.kind is not TokenKind.ACCESS_TOKEN or not refresher.app.tickets:
        return refresher.step

    def step_then_wake() -> float:
        had_token = refresher.held is not None
        delay_s = refresher.step()
        if not had_token and refresher.held is not None:
            app_id = refresher.app.app_id
            for kind in refresher.app.tickets:
                ticket = fleet.get(app_id, kind)
                if ticket is not None:
                    ticket.dependency_arrived()
                    scheduler.wake(ticket.key)
        return delay_s

    return step_then_wake


def _component_step(
    refresher: AppRefresher, fleet: Fleet, scheduler: Scheduler
) -> Callable[[], float]:
    def step_then_wake() -> float:
        had_valid = refresher.holds_valid()
        delay_s = refresher.step()
        if not had_valid and refresher.holds_valid():
            waiting = [
                r
                for r in fleet.all()
                if r.app.token_api is TokenApi.AUTHORIZER
                and r.kind is TokenKind.ACCESS_TOKEN
                and r.app.component_appid == refresher.app.app_id
            ]
            for authorizer in waiting:
                authorizer.dependency_arrived()
            scheduler.wake_many(r.key for r in waiting)
        return delay_s

    return step_then_wake
