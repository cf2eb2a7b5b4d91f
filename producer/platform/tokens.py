"""Fetching a platform's credentials: the component token, and each authorizer's token.

`PlatformTokens` is what the component token's refresher fetches through (a `Fetcher`) and
what each authorizer's `AuthorizerSource` calls; it holds the chain's durable parts in the registry:

- the component token: the newest verify ticket from the registry, the component secret
  from the platforms file. 61005/61006 (ticket expired or invalid) and "no ticket stored"
  ask WeChat to push the ticket again (`api_start_push_ticket`, at most every
  `PUSH_RESTART_MIN_S` per platform) and are logged as errors (an alert fires on them);
- an authorizer's token: its refresh token from the registry. A refresh token the answer
  carries that differs from the one held is written (compare-and-set on its version)
  **before** the token is returned, so before it is published; when that write fails the
  token is not used. 61023 marks the authorizer as needing re-authorization, once, and
  `on_lost` takes it out of the fleet: it is not asked again every step;
- the database away: the component token is bought with the verify ticket last read (a
  ticket lives 12 hours), and an authorizer refreshes with the refresh token this producer
  last read, wrote or primed for it (kept in memory: `prime` reads a platform's at start and
  after a takeover), so tokens keep flowing through a database outage; a new refresh token
  WeChat returns meanwhile cannot be stored, so its token is not used;
- a token `offer`ed by the callback processor (api_query_auth's, for a code just redeemed)
  is handed out instead of a call, so a re-authorization replaces the old token at once.

Registry failures are transient upstream failures here (the refresher backs off and holds
what it has); no secret or whole token is logged.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from consumer_lib.wire.authorizers import authorizer_app_id
from consumer_lib.wire.update import mask
from producer.app_config import AppConfig, TokenApi
from producer.platform.db.records import VerifyTicket
from producer.platform.db.registry import MAX_PAGE, PlatformRegistry
from producer.platform.errors import RegistryUnavailable
from producer.store.audit import AuditEvent, AuditLog
from producer.upstream.errcodes import FailureKind
from producer.upstream.errors import FetchedToken, UpstreamError
from producer.upstream.openplatform import OpenPlatformClient

log = logging.getLogger(__name__)

#: `api_start_push_ticket` is asked at most this often per platform.
PUSH_RESTART_MIN_S = 600.0
#: An offered token is used only while at least this much of its life is left.
OFFER_MIN_LEFT_S = 600.0
#: Errcodes saying the verify ticket is expired or invalid.
TICKET_ERRCODES = frozenset({61005, 61006})
#: The errcode saying an authorizer's refresh token is dead (re-authorization needed).
REFRESH_TOKEN_DEAD = 61023

#: Told (component appid, authorizer appid, why) when an authorizer cannot be refreshed
#: any more (61023, or no longer authorized in the registry).
OnLost = Callable[[str, str, str], None]


@dataclass(frozen=True, slots=True)
class _Offer:
    token: FetchedToken
    fetched_at_s: float


class PlatformTokens:
    """Fetches component and authorizer tokens; thread-safe."""

    def __init__(
        self,
        *,
        registry: PlatformRegistry,
        client: OpenPlatformClient,
        audit: AuditLog | None = None,
        who: str,
        on_lost: OnLost | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.registry = registry
        self.client = client
        self._audit = audit
        self._who = who
        self._on_lost = on_lost
        self._clock = clock
        self._lock = threading.Lock()
        self._offers: dict[str, _Offer] = {}
        self._push_restarted_at: dict[str, float] = {}
        #: The refresh token (and its version) last read or written, by app id: what an
        #: authorizer refreshes with while the registry does not answer.
        self._last_known: dict[str, tuple[str, int]] = {}
        #: Fetches that used the remembered refresh token (the registry away).
        self.remembered_uses = 0
        #: The verify ticket last read, by platform: the component token is bought with it
        #: while the registry does not answer (a ticket lives 12 hours).
        self._last_ticket: dict[str, VerifyTicket] = {}
        #: How many times each platform's ticket was refused (61005/61006) or missing.
        self.ticket_failures: dict[str, int] = {}
        self.push_restarts: dict[str, int] = {}

    def set_on_lost(self, on_lost: OnLost) -> None:
        self._on_lost = on_lost

    # ------------------------------------------------------------------ component token
    def fetch(self, app: AppConfig, *, force_refresh: bool = False) -> FetchedToken:
        """The component token of `app` (a `TokenApi.COMPONENT` credential)."""
        del force_refresh  # the component API has no forced mode
        if app.token_api is not TokenApi.COMPONENT:
            raise UpstreamError(f"{app.app_id} is not a component token", kind=FailureKind.CONFIG)
        component = app.app_id
        try:
            ticket = self.registry.verify_ticket(component)
        except RegistryUnavailable as exc:
            with self._lock:
                ticket = self._last_ticket.get(component)
            if ticket is None:
                raise UpstreamError(
                    f"{component}: reading its verify ticket: {exc}", kind=FailureKind.TRANSIENT
                ) from None
            log.warning(
                "%s: the registry is away (%s); buying the component token with the ticket "
                "read %.0f s ago",
                component,
                exc,
                self._clock() - ticket.received_at_s,
            )
        else:
            if ticket is not None:
                with self._lock:
                    self._last_ticket[component] = ticket
        secret = app.secret.get_secret_value()
        if ticket is None:
            self._ticket_refused(component, secret, "no component_verify_ticket stored yet")
            raise UpstreamError(
                f"{component}: no component_verify_ticket stored yet (is the receiver "
                "reachable by WeChat at the platform's authorization-event URL?)",
                kind=FailureKind.TRANSIENT,
            )
        try:
            return self.client.component_token(component, secret, ticket.ticket)
        except UpstreamError as exc:
            if exc.errcode in TICKET_ERRCODES:
                self._ticket_refused(
                    component, secret, f"{exc} (ticket received {ticket.age_s:.0f} s ago)"
                )
            raise

    def _ticket_refused(self, component: str, secret: str, why: str) -> None:
        with self._lock:
            self.ticket_failures[component] = self.ticket_failures.get(component, 0) + 1
            last_s = self._push_restarted_at.get(component)
            now_s = self._clock()
            if last_s is not None and now_s - last_s < PUSH_RESTART_MIN_S:
                return
            self._push_restarted_at[component] = now_s
        log.error(
            "%s: component token refused: %s; asking WeChat to push the ticket", component, why
        )
        try:
            self.client.start_push_ticket(component, secret)
        except UpstreamError as exc:
            log.error("%s: api_start_push_ticket failed: %s", component, exc)
            return
        with self._lock:
            self.push_restarts[component] = self.push_restarts.get(component, 0) + 1

    # ------------------------------------------------------------------ authorizer tokens
    def remember(self, app_id: str, refresh_token: str, version: int) -> None:
        """The refresh token just stored for `app_id` (a redeemed code, a recovery): what it
        refreshes with should the registry be away at its first refresh."""
        with self._lock:
            self._last_known[app_id] = (refresh_token, version)

    def prime(self, component_appid: str) -> int:
        """Remember every `authorized` refresh token of a platform now (at start, after a
        takeover), a page at a time; returns how many. `RegistryUnavailable` propagates."""
        count = 0
        after: str | None = None
        while True:
            page = self.registry.refresh_tokens(component_appid, after=after)
            with self._lock:
                for authorizer, (token, version) in page.items():
                    self._last_known[authorizer_app_id(component_appid, authorizer)] = (
                        token,
                        version,
                    )
            count += len(page)
            if len(page) < MAX_PAGE:
                return count
            after = max(page)

    def offer(self, app_id: str, token: FetchedToken) -> None:
        """A token just handed out for `app_id` (api_query_auth): the next fetch takes it."""
        with self._lock:
            self._offers[app_id] = _Offer(token, self._clock())

    def _take_offer(self, app_id: str) -> FetchedToken | None:
        with self._lock:
            offer = self._offers.pop(app_id, None)
        if offer is None:
            return None
        left_s = offer.token.expires_in_s - (self._clock() - offer.fetched_at_s)
        if left_s < OFFER_MIN_LEFT_S:
            return None
        return FetchedToken(offer.token.value, int(left_s))

    def authorizer_token(self, app: AppConfig, component_token: str) -> FetchedToken:
        """A new token of authorizer `app`, fetched with `component_token`; the refresh token
        it came with is in the registry before this returns."""
        component, authorizer = app.component_appid, app.authorizer_appid
        if app.token_api is not TokenApi.AUTHORIZER or component is None or authorizer is None:
            raise UpstreamError(f"{app.app_id} is not an authorizer", kind=FailureKind.CONFIG)
        offered = self._take_offer(app.app_id)
        if offered is not None:
            return offered
        held = self._refresh_token_of(app.app_id, component, authorizer)
        if held is None:
            self._lost(component, authorizer, "not authorized in the registry")
            raise UpstreamError(
                f"{app.app_id}: not authorized in the registry (no refresh token)",
                kind=FailureKind.CONFIG,
            )
        refresh_token, version = held
        try:
            token, returned = self.client.authorizer_token(
                component_token, component, authorizer, refresh_token
            )
        except UpstreamError as exc:
            if exc.errcode == REFRESH_TOKEN_DEAD:
                self._refresh_token_dead(component, authorizer, version, exc)
            raise
        if returned and returned != refresh_token:
            self._store_returned(app.app_id, component, authorizer, version, returned)
            with self._lock:
                self._last_known[app.app_id] = (returned, version + 1)
        return token

    def _refresh_token_of(
        self, app_id: str, component: str, authorizer: str
    ) -> tuple[str, int] | None:
        """The registry's (refresh token, version); the one remembered while it is away."""
        try:
            held = self.registry.refresh_token(component, authorizer)
        except RegistryUnavailable as exc:
            with self._lock:
                remembered = self._last_known.get(app_id)
                if remembered is not None:
                    self.remembered_uses += 1
            if remembered is None:
                raise UpstreamError(
                    f"{app_id}: reading its refresh token: {exc}", kind=FailureKind.TRANSIENT
                ) from None
            log.debug(
                "%s: the registry is away (%s); refreshing with the remembered one", app_id, exc
            )
            return remembered
        with self._lock:
            if held is None:
                self._last_known.pop(app_id, None)
            else:
                self._last_known[app_id] = held
        return held

    def _store_returned(
        self, app_id: str, component: str, authorizer: str, version: int, returned: str
    ) -> None:
        """Write the refresh token WeChat returned before its access token goes anywhere."""
        try:
            stored = self.registry.replace_refresh_token(component, authorizer, version, returned)
        except RegistryUnavailable as exc:
            raise UpstreamError(
                f"{app_id}: WeChat returned a new refresh token and the registry cannot store "
                f"it ({exc}); its access token is not used",
                kind=FailureKind.TRANSIENT,
            ) from None
        if not stored:
            raise UpstreamError(
                f"{app_id}: its refresh token changed in the registry meanwhile "
                "(re-authorized?); fetching again with the new one",
                kind=FailureKind.TRANSIENT,
            )
        log.info("%s: WeChat returned a new refresh token %s; stored", app_id, mask(returned))
        self._record(AuditEvent.REFRESH_TOKEN_REPLACED, app_id, "returned by api_authorizer_token")

    def _refresh_token_dead(
        self, component: str, authorizer: str, version: int, exc: UpstreamError
    ) -> None:
        reason = f"61023 from api_authorizer_token: {exc}"[:200]
        try:
            first = self.registry.mark_needs_reauthorization(
                component, authorizer, reason, version=version
            )
        except RegistryUnavailable as error:
            log.error(
                "%s.%s: 61023, and the registry is unavailable: %s", component, authorizer, error
            )
            return
        if first:
            log.error(
                "%s: authorizer %s needs to authorize the platform again (61023); no longer "
                "refreshed",
                component,
                authorizer,
            )
            self._record(AuditEvent.NEEDS_REAUTHORIZATION, f"{component}.{authorizer}", reason)
        self._lost(component, authorizer, "needs re-authorization (61023)")

    def _lost(self, component: str, authorizer: str, why: str) -> None:
        if self._on_lost is not None:
            self._on_lost(component, authorizer, why)

    def _record(self, event: AuditEvent, app_id: str, reason: str) -> None:
        if self._audit is not None:
            self._audit.record(event, app_id, who=self._who, reason=reason)
