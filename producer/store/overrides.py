"""An operator's override: the one use case behind `wxtoken set` and the gateway's
`POST /v1/apps/{app}/access_token`.

    open the publisher  ->  check the clock against Redis  ->  version  ->  `Issuer.issue()`

The broker is reached before anything is written, so a broker that is away changes
nothing (`BrokerError`); so does a Redis that is away (`StoreError`). Every other ending
is an `Overridden` value saying what happened, which the CLI prints and the gateway
turns into its HTTP answer:

- `PUBLISHED`: compare-and-set into Redis, audited, published.
- `UNPUBLISHED`: compare-and-set into Redis and audited, but publishing failed;
  subscribers find it in the snapshot when they next read it.
- `REFUSED`: Redis holds the same or a newer version; nothing audited or published.
- `SKEWED`: this host's clock is too far from Redis's `TIME` to stamp the override with
  it; nothing written.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

from consumer_lib.errors import BrokerError
from consumer_lib.wire.update import TokenKind, TokenUpdate
from producer.leadership.clock_skew import ClockSkewed
from producer.store.audit import AuditEvent
from producer.store.issuing import IssueOutcome, Issuer

log = logging.getLogger(__name__)

#: Publishes one update (with `now_s`); raises `BrokerError`. `ops.broker.Publish` is one.
Publish = Callable[[TokenUpdate, float], None]


class OverrideOutcome(enum.Enum):
    PUBLISHED = "published"
    UNPUBLISHED = "unpublished"
    REFUSED = "refused"
    SKEWED = "skewed"


@dataclass(frozen=True)
class Overridden:
    """What an override did (module docstring)."""

    outcome: OverrideOutcome
    #: The update, with its version; None with `SKEWED` (no version was allocated).
    update: TokenUpdate | None
    #: With `REFUSED`: what Redis holds instead (`Issued.refusal`).
    refusal: str = ""
    #: With `SKEWED`: how far the clock is off.
    skewed: ClockSkewed | None = None
    #: With `UNPUBLISHED`: why publishing failed.
    publish_error: BrokerError | None = None

    @property
    def written(self) -> bool:
        return self.outcome in (OverrideOutcome.PUBLISHED, OverrideOutcome.UNPUBLISHED)


def issue_override(
    issuer: Issuer,
    open_publisher: Callable[[], AbstractContextManager[Publish]],
    app_id: str,
    kind: TokenKind,
    token: str,
    *,
    clock: Callable[[], float],
    expires_in_s: int,
    reason: str | None,
) -> Overridden:
    """Issue `token` as an override by `issuer`, valid `expires_in_s` from now on `clock`
    (module docstring). Raises `StoreError` or `BrokerError` when Redis or the broker is
    away (nothing changed), pydantic's `ValidationError` for a value the update model
    refuses."""
    with open_publisher() as publish:
        try:
            update = issuer.new_override(
                app_id, kind, token, clock=clock, expires_in_s=expires_in_s, reason=reason
            )
        except ClockSkewed as exc:
            return Overridden(OverrideOutcome.SKEWED, None, skewed=exc)
        issued = issuer.issue(update, event=AuditEvent.OVERRIDE, reason=reason)
        if issued.outcome is not IssueOutcome.WRITTEN:
            return Overridden(OverrideOutcome.REFUSED, update, refusal=issued.refusal)
        try:
            publish(update, clock())
        except BrokerError as exc:  # after the write and the audit entry
            log.warning("override stored but not published %s: %s", update, exc)
            return Overridden(OverrideOutcome.UNPUBLISHED, update, publish_error=exc)
    log.info("override stored and published %s by %s", update, issuer.who)
    return Overridden(OverrideOutcome.PUBLISHED, update)
