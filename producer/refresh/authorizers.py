"""Keeping one authorizer's token fresh: an `AppRefresher` fetching through its platform.

A third-party platform's authorizer token is scheduled, versioned, stored, signed and
published like any access token (its tickets are ordinary `TicketRefresher`s). What differs
is the upstream call, much as a ticket's:
- it is made with the component token the platform's refresher holds now; without a valid
  one (start-up, a ticket outage) it waits, spending nothing, and is woken when the
  component token arrives (`component_arrived`);
- a refused component token (40001/40014/42001) goes through the component refresher's
  passive-refresh path once (`AppRefresher.refresh_refused`), never waiting on its lock;
- `AuthorizerTokens.authorizer_token` (`producer.platform.tokens`) makes the call, with the
  refresh token from the registry, and writes a returned refresh token there before the
  token is used.

`Components` finds each platform's component-token refresher by component appid.
"""

from __future__ import annotations

import threading
from typing import Any

from consumer_lib.wire.kinds import TokenKind
from producer.app_config import AppConfig
from producer.ports import AuthorizerTokens
from producer.refresh.refresher import AppRefresher
from producer.upstream.errcodes import FailureKind
from producer.upstream.errors import FetchedToken, UpstreamError
from producer.upstream.tickets import call_with_token

#: Without a component token to fetch with, an authorizer looks again this often (it is
#: also woken when one arrives): 10,000 of them must not spin while a platform's ticket
#: is missing.
NO_COMPONENT_TOKEN_RETRY_S = 5.0


class Components:
    """The component-token refresher of each platform, by component appid; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_appid: dict[str, AppRefresher] = {}

    def register(self, refresher: AppRefresher) -> None:
        with self._lock:
            self._by_appid[refresher.app.app_id] = refresher

    def get(self, component_appid: str) -> AppRefresher | None:
        with self._lock:
            return self._by_appid.get(component_appid)


class AuthorizerRefresher(AppRefresher):
    """The refresh state machine of one authorizer's access token."""

    __slots__ = ("_components", "_platform_tokens", "_waiting_for_component")

    def __init__(
        self,
        app: AppConfig,
        *,
        components: Components,
        platform_tokens: AuthorizerTokens,
        **kwargs: Any,
    ) -> None:
        if app.component_appid is None or app.authorizer_appid is None:
            raise ValueError(f"{app.app_id} is not an authorizer")
        super().__init__(app, kind=TokenKind.ACCESS_TOKEN, **kwargs)
        self._components = components
        self._platform_tokens = platform_tokens
        self._waiting_for_component = False

    def _component(self) -> AppRefresher | None:
        assert self.app.component_appid is not None
        return self._components.get(self.app.component_appid)

    def _component_token(self, now_s: float) -> str | None:
        component = self._component()
        held = None if component is None else component.held
        return held.value if held is not None and held.is_valid_at(now_s) else None

    def component_arrived(self) -> None:
        """The platform's refresher holds a component token now: one waiting for it may
        fetch at its next step (the service wakes it)."""
        if self._waiting_for_component:
            self._retry_at = 0.0

    def _can_fetch(self, now_s: float) -> bool:
        return self._component_token(now_s) is not None

    def _held_off_until(self, now_s: float) -> float | None:
        self._waiting_for_component = not self._can_fetch(now_s)
        return now_s + NO_COMPONENT_TOKEN_RETRY_S if self._waiting_for_component else None

    def _call_upstream(self, app: AppConfig, *, force_refresh: bool) -> FetchedToken:
        del force_refresh  # api_authorizer_token has no forced mode
        component = self._component()
        if component is None:
            raise UpstreamError(
                f"{app.app_id}: its platform is not served here", kind=FailureKind.CONFIG
            )
        return call_with_token(
            lambda token: self._platform_tokens.authorizer_token(app, token),
            what=app.app_id,
            using="the component token",
            token=self._component_token(self._clock()),
            refresh_token=component.refresh_refused,
        )
