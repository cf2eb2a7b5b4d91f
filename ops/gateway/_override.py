"""The gateway's override, `POST /v1/apps/{app}/access_token`: `issue_override()` (the use
case `wxtoken set` runs too) by the gateway's operator and the API key's name, its
`Overridden` result put in the gateway's words for the route (`_app.Gateway.override`).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

from consumer_lib import TokenKind, TokenUpdate, WxTokenError
from producer.store.audit import AuditLog
from producer.store.issuing import Issuer
from producer.store.overrides import OverrideOutcome, Publish, issue_override
from producer.store.tokens import TokenStore


class OverrideRefused(WxTokenError):
    """Redis already holds a newer version; nothing was written or published."""


class PublishFailed(WxTokenError):
    """Stored in Redis, but publishing failed: subscribers find it in the snapshot."""


@dataclass
class Overrider:
    store: TokenStore
    audit: AuditLog
    open_publisher: Callable[[], AbstractContextManager[Publish]]
    operator: str
    clock: Callable[[], float]

    def override(
        self,
        app_id: str,
        kind: TokenKind,
        token: str,
        *,
        expires_in_s: int,
        reason: str | None,
        key_name: str,
    ) -> TokenUpdate:
        """Store and publish `token`; raises `OverrideRefused`, `ClockSkewed` (this clock is
        too far from Redis's), `StoreError`, `BrokerError` (nothing changed) or
        `PublishFailed` (stored, not published)."""
        who = f"{self.operator}/key:{key_name}"[:128]
        done = issue_override(
            Issuer(self.store, audit=self.audit, who=who),
            self.open_publisher,
            app_id,
            kind,
            token,
            clock=self.clock,
            expires_in_s=expires_in_s,
            reason=reason,
        )
        if done.skewed is not None:
            raise done.skewed
        assert done.update is not None  # allocated in every other outcome
        if done.outcome is OverrideOutcome.REFUSED:
            raise OverrideRefused(done.refusal)
        if done.outcome is OverrideOutcome.UNPUBLISHED:
            raise PublishFailed(
                f"stored version {done.update.version}, publishing failed: {done.publish_error}"
            )
        return done.update
