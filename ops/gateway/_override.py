"""The override use case behind `POST /v1/apps/{app}/access_token`, as `wxtoken set` does it.

The broker is reached before anything is written, the token is signed with the gateway's
operator key, compare-and-set into Redis with a new version, audited with the API key's
name, then published. A failure before the write changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

from consumer_lib import BrokerError, TokenKind, TokenUpdate, WxTokenError
from producer.store.audit import AuditEvent, AuditLog
from producer.store.issuing import IssueOutcome, Issuer
from producer.store.tokens import TokenStore

log = logging.getLogger(__name__)

#: Publishes one update (with `now_s`); raises `BrokerError`.
Publish = Callable[[TokenUpdate, float], None]


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
        issuer = Issuer(self.store, audit=self.audit, who=who)
        with self.open_publisher() as publish:
            update = issuer.new_override(
                app_id, kind, token, clock=self.clock, expires_in_s=expires_in_s, reason=reason
            )
            try:
                issued = issuer.issue(
                    update,
                    publish=lambda u: publish(u, self.clock()),
                    event=AuditEvent.OVERRIDE,
                    reason=reason,
                )
            except BrokerError as exc:
                raise PublishFailed(
                    f"stored version {update.version}, publishing failed: {exc}"
                ) from None
            if issued.outcome is not IssueOutcome.WRITTEN:
                raise OverrideRefused(issued.refusal)
            log.info("override stored and published %s by key %s", update, key_name)
        return update
