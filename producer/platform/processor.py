"""The leader acting on the pushes the receiver stored: one callback at a time, oldest first.

Each stored callback is decrypted with its platform's EncodingAESKey and acted on:

- `component_verify_ticket`: the receiver stored the ticket already; a component token
  that was failing is fetched again now (`Hooks.ticket_arrived`);
- `authorized` / `updateauthorized`: the code is redeemed (`api_query_auth`, with the
  component token), the refresh token stored (`PlatformRegistry.authorize`) and the access
  token handed to the authorizer's refresher, which issues it as a new version at once
  (`Hooks.authorized`): a re-authorization replaces the old token, not in two hours;
- `unauthorized`: the registry forgets the refresh token, the authorizer is no longer
  refreshed and its snapshot is deleted (`Hooks.unauthorized`);
- anything else is recorded and ignored.

A callback is marked processed, with its outcome, only after it was acted on. Something
that may pass (no component token yet, WeChat busy, the database away) leaves it for the
next round; something that will not (a code expired, a push that does not decrypt) is marked
with the reason. A leader killed half-way leaves the row unprocessed, and the next leader
acts on it (each action is safe to repeat). Every authorization change is audited.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from consumer_lib.wire.authorizers import authorizer_app_id
from producer.platform.crypto import MessageCrypto
from producer.platform.db.records import StoredCallback
from producer.platform.db.registry import PlatformRegistry
from producer.platform.errors import CallbackRejected
from producer.platform.events import PlatformEvent
from producer.platform.messages import parse_event
from producer.platform.tokens import PlatformTokens
from producer.refresh.sources import Components
from producer.store.audit import AuditEvent, AuditLog
from producer.upstream.errcodes import FailureKind
from producer.upstream.errors import UpstreamError
from producer.upstream.tickets import call_with_token

log = logging.getLogger(__name__)

#: Callbacks read per round, at most.
BATCH = 100


class Hooks(Protocol):
    """What the processor asks of the producer (`PlatformKeeper` is one)."""

    def ticket_arrived(self, component_appid: str) -> None: ...

    def authorized(
        self, component_appid: str, authorizer_appid: str, reason: str, *, after_dead_grant: bool
    ) -> None: ...

    def unauthorized(self, component_appid: str, authorizer_appid: str) -> None: ...


class _Later(Exception):
    """This callback cannot be acted on now; try again next round."""


@dataclass
class ProcessorStats:
    processed: dict[str, int] = field(default_factory=dict)
    deferred: int = 0

    def count(self, what: str) -> None:
        self.processed[what] = self.processed.get(what, 0) + 1


class CallbackProcessor:
    """Acts on stored callbacks (leader only; one thread calls `process_pending`)."""

    def __init__(
        self,
        *,
        registry: PlatformRegistry,
        crypto: Mapping[str, MessageCrypto],
        tokens: PlatformTokens,
        components: Components,
        hooks: Hooks,
        audit: AuditLog | None,
        who: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._registry = registry
        self._crypto = dict(crypto)
        self._tokens = tokens
        self._components = components
        self._hooks = hooks
        self._audit = audit
        self._who = who
        self._clock = clock
        self.stats = ProcessorStats()

    def process_pending(self, limit: int = BATCH) -> int:
        """Act on up to `limit` unprocessed callbacks, oldest first; returns how many were
        marked processed. Stops at the first that must wait (later ones may depend on it:
        an `unauthorized` after an `authorized`). `RegistryUnavailable` propagates."""
        done = 0
        for stored in self._registry.unprocessed_callbacks(limit):
            try:
                outcome = self._act(stored)
            except _Later as wait:
                self.stats.deferred += 1
                log.info(
                    "%s: callback %d (%s) waits: %s",
                    stored.component_appid,
                    stored.id,
                    stored.info_type,
                    wait,
                )
                break
            self._registry.mark_processed(stored.id, outcome)
            done += 1
        return done

    def _act(self, stored: StoredCallback) -> str:
        crypto = self._crypto.get(stored.component_appid)
        if crypto is None:
            self.stats.count("unknown_platform")
            return "ignored: not a platform in this producer's platforms file"
        try:
            event = parse_event(
                crypto.decrypt(stored.encrypt_b64),
                component_appid=stored.component_appid,
                push_id=stored.push_id,
                received_at_s=stored.received_at_s,
            )
        except CallbackRejected as exc:
            self.stats.count("rejected")
            log.error(
                "%s: stored callback %d unreadable: %s", stored.component_appid, stored.id, exc
            )
            return f"rejected: {exc.reason}"
        if event.info_type == "component_verify_ticket":
            self._hooks.ticket_arrived(event.component_appid)
            self.stats.count("ticket")
            return "ticket"
        if event.info_type in ("authorized", "updateauthorized"):
            return self._authorized(event)
        if event.info_type == "unauthorized":
            return self._unauthorized(event)
        self.stats.count("other")
        return f"ignored: InfoType {event.raw_info_type}"

    def _authorized(self, event: PlatformEvent) -> str:
        component, authorizer = event.component_appid, event.authorizer_appid
        code = event.authorization_code
        assert authorizer is not None  # parse_event checked both
        assert code is not None
        refresher = self._components.get(component)
        if refresher is None:
            raise _Later("its component token is not served here yet")
        held = refresher.held
        token = held.value if held is not None and held.is_valid_at(self._clock()) else None
        if token is None:
            raise _Later("no component token held yet")
        client = self._tokens.client
        try:
            authorization = call_with_token(
                lambda component_token: client.query_auth(component_token, component, code),
                what=f"{component}: redeeming {authorizer}'s code",
                using="the component token",
                token=token,
                refresh_token=refresher.refresh_refused,
            )
        except UpstreamError as exc:
            if exc.kind is FailureKind.CONFIG or exc.errcode in (61009, 61010):
                return self._code_refused(event, exc)
            raise _Later(str(exc)) from None
        if authorization.authorizer_appid != authorizer:
            self.stats.count("mismatch")
            return f"refused: the code is {authorization.authorizer_appid}'s, not {authorizer}'s"
        before = self._registry.authorizer(component, authorizer)
        again = before is not None and before.state == "authorized"
        version = self._registry.authorize(
            component,
            authorizer,
            authorization.refresh_token,
            auth_time_s=event.create_time_s,
        )
        app_id = authorizer_app_id(component, authorizer)
        self._tokens.remember(app_id, authorization.refresh_token, version)
        self._tokens.offer(app_id, authorization.token)
        reason = "re-authorized" if again else "authorized"
        # A customer coming back after a revocation or a dead refresh token (61023): a
        # snapshot left from the old grant must not be adopted instead of the new token.
        after_dead_grant = before is not None and before.state != "authorized"
        self._hooks.authorized(component, authorizer, reason, after_dead_grant=after_dead_grant)
        self._record(
            AuditEvent.REAUTHORIZED if again else AuditEvent.AUTHORIZED,
            app_id,
            f"{event.raw_info_type}: code redeemed, refresh token v{version}",
        )
        log.info("%s: %s %s (refresh token v%d)", component, reason, authorizer, version)
        self.stats.count("reauthorized" if again else "authorized")
        return f"{reason}: refresh token v{version}"

    def _code_refused(self, event: PlatformEvent, exc: UpstreamError) -> str:
        component, authorizer = event.component_appid, event.authorizer_appid
        assert authorizer is not None
        current = self._registry.authorizer(component, authorizer)
        if current is None or current.state != "authorized":
            self._registry.mark_pending_code(component, authorizer)
        log.error(
            "%s: %s's authorization code was refused (%s); `wxtoken platform reconcile` "
            "recovers its refresh token if WeChat still has one",
            component,
            authorizer,
            exc,
        )
        self.stats.count("code_refused")
        return f"code refused: {exc}"

    def _unauthorized(self, event: PlatformEvent) -> str:
        component, authorizer = event.component_appid, event.authorizer_appid
        assert authorizer is not None
        changed = self._registry.unauthorize(component, authorizer, "unauthorized by the customer")
        self._hooks.unauthorized(component, authorizer)
        if changed:
            self._record(
                AuditEvent.UNAUTHORIZED,
                authorizer_app_id(component, authorizer),
                "the customer revoked the platform's authorization",
            )
            log.info("%s: %s revoked its authorization; no longer refreshed", component, authorizer)
        self.stats.count("unauthorized")
        return "unauthorized" if changed else "unauthorized already"

    def _record(self, event: AuditEvent, app_id: str, reason: str) -> None:
        if self._audit is not None:
            self._audit.record(event, app_id, who=self._who, reason=reason)
