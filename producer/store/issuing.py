"""Issuing a token: the one use case behind every new version, whoever obtained the value.

    version  ->  sign + compare-and-set into Redis, with its audit entry  ->  (the caller) publish

The refresher issues what it fetched from WeChat; `wxtoken set` and the gateway's override
issue an operator's token (`new_override`, through `producer.store.overrides.
issue_override`). All go through `Issuer`, so a new version is always allocated, stored,
recorded and published the same way:

- `new_version()` hands out a version above every one handed out or stored for the app
  and kind, never below the caller's clock in milliseconds (`TokenStore.next_version`).
- `issue()` writes the update with a compare-and-set (signed by the store's codec; fenced
  with the caller's lease owner, if any) that adds the audit entry in the same Redis call
  when the write lands. A newer stored version (`REFUSED`) or a lost lease (`FENCED`)
  stops there: nothing is recorded, and `Issued.published` is False. Otherwise
  `Issued.published` is True: the caller publishes it now. `issue()` calls nothing back;
  what happened is what it returns.
- With `publish_unsaved=True` (the producer) an unreachable Redis does not stop a fresh
  token from reaching subscribers: the outcome is `UNSAVED` (to publish now, and to write
  once Redis is back with `write_unsaved`); so is a write no replica confirmed in time
  (`WriteResult.confirmed`), which a failover could lose. The CLI does not set it: an
  override must land in Redis first.
- The audit trail gets one entry per issued update, added by the write that lands it. An
  update whose write failed (or was skipped: Redis known to be away) carries its entry
  (`Issued.audit_entry`, stamped when issued) to `write_unsaved`: a write whose reply was
  lost may have landed with its entry, and then the later write is a replay that adds
  none, so the entry is never written twice.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from consumer_lib.errors import StoreError
from consumer_lib.wire.update import TokenKind, TokenSource, TokenUpdate
from producer.leadership.clock_skew import check_issuer_clock
from producer.store.audit import AuditEvent, AuditLog, AuditRecord
from producer.store.tokens import TokenStore, WriteResult


class IssueOutcome(enum.Enum):
    WRITTEN = "written"
    #: Redis was unreachable (or known to be), or no replica confirmed the write:
    #: published, to be written (again).
    UNSAVED = "unsaved"
    #: Redis holds the same or a newer version: nothing recorded or published.
    REFUSED = "refused"
    #: The writer's lease owner no longer holds the lease: nothing recorded or published.
    FENCED = "fenced"


@dataclass(frozen=True)
class Issued:
    update: TokenUpdate
    outcome: IssueOutcome
    #: With `REFUSED`: the newer update Redis holds, if it decodes.
    stored: TokenUpdate | None = None
    #: With `UNSAVED`: why Redis did not take it.
    error: StoreError | None = None
    #: With `UNSAVED` when the write failed or was skipped: the audit entry for the write
    #: that lands it later (`Issuer.write_unsaved`).
    audit_entry: AuditRecord | None = None

    @property
    def published(self) -> bool:
        """Whether the caller is to publish it now (written, or to be written later)."""
        return self.outcome in (IssueOutcome.WRITTEN, IssueOutcome.UNSAVED)

    @property
    def refusal(self) -> str:
        """With `REFUSED`: what Redis holds instead, for a message to the operator."""
        newer = f"version {self.stored.version}" if self.stored else "a newer version"
        update = self.update
        return (
            f"Redis already holds {newer} of {update.app_id}/{update.kind}, "
            f"newer than {update.version}"
        )


class Issuer:
    """Allocates versions and issues updates through one store and one audit trail."""

    __slots__ = ("_audit", "_who", "store")

    def __init__(self, store: TokenStore, *, audit: AuditLog | None, who: str) -> None:
        self.store = store
        self._audit = audit
        self._who = who

    @property
    def who(self) -> str:
        """The producer id new versions are issued by."""
        return self._who

    def new_version(self, app_id: str, kind: TokenKind, *, now_s: float) -> int:
        """A fresh version (see the module docstring); `StoreError` when Redis is away."""
        return self.store.next_version(app_id, kind, now_s=now_s)

    def new_override(
        self,
        app_id: str,
        kind: TokenKind,
        token: str,
        *,
        clock: Callable[[], float],
        expires_in_s: int,
        reason: str | None,
    ) -> TokenUpdate:
        """An operator's token obtained elsewhere (`wxtoken set`, the gateway's override)
        as an update with a fresh version, valid `expires_in_s` from now on `clock`, by
        this issuer; `issue()` it. `clock` must be within `ISSUE_MAX_SKEW_S` of Redis's
        `TIME` (`ClockSkewed` otherwise: the override would live by a wrong clock).
        `StoreError` when Redis is away, pydantic's `ValidationError` for a value the
        update model refuses."""
        check_issuer_clock(self.store.client, clock, who=self._who)
        now_s = clock()
        return TokenUpdate(
            app_id=app_id,
            kind=kind,
            value=token,
            issued_at=now_s,
            expires_at=now_s + expires_in_s,
            version=self.new_version(app_id, kind, now_s=now_s),
            source=TokenSource.OVERRIDE,
            producer_id=self._who,
            reason=reason,
        )

    def issue(
        self,
        update: TokenUpdate,
        *,
        event: AuditEvent,
        reason: str | None,
        fence_owner: str | None = None,
        write: bool = True,
        publish_unsaved: bool = False,
    ) -> Issued:
        """Store and record `update`; what happened, and whether to publish it now
        (`Issued.published`; module docstring). `write=False` skips a Redis known to be away
        (with `publish_unsaved`). Raises `StoreError` only without `publish_unsaved`."""
        if not write and not publish_unsaved:
            raise ValueError("an update that is not written must be allowed to go unsaved")
        audit = self._audit
        entry = None if audit is None else self._entry(event, update, reason)
        if not write:
            return Issued(update, IssueOutcome.UNSAVED, audit_entry=entry)
        try:
            result = self.store.write(update, fence_owner=fence_owner, audit=entry)
        except StoreError as exc:
            if not publish_unsaved:
                raise
            # It may have landed (a lost reply): the later write adds the entry, or not.
            return Issued(update, IssueOutcome.UNSAVED, error=exc, audit_entry=entry)
        if result.fenced:
            return Issued(update, IssueOutcome.FENCED)
        if not result.written:
            return Issued(update, IssueOutcome.REFUSED, stored=result.stored)
        if audit is not None and not result.replayed:  # a replay's first call added it
            audit.added(result.audit_error)
        # Unconfirmed by the replicas, the producer writes it again later (a replay, adding
        # no entry); the CLI takes it as written.
        unconfirmed = not result.confirmed and publish_unsaved
        return Issued(update, IssueOutcome.UNSAVED if unconfirmed else IssueOutcome.WRITTEN)

    def write_unsaved(
        self, update: TokenUpdate, *, audit_entry: AuditRecord | None, fence_owner: str | None
    ) -> WriteResult:
        """Write an `UNSAVED` update now that Redis answers, with the audit entry `issue`
        handed out (`Issued.audit_entry`): added only if this write lands it (a replay of a
        write that did land adds none). `StoreError` propagates."""
        result = self.store.write(update, fence_owner=fence_owner, audit=audit_entry)
        landed_now = result.written and not result.replayed
        if self._audit is not None and audit_entry is not None and landed_now:
            self._audit.added(result.audit_error)
        return result

    def _entry(self, event: AuditEvent, update: TokenUpdate, reason: str | None) -> AuditRecord:
        """The audit entry about `update` by this issuer (needs an audit trail)."""
        assert self._audit is not None
        return self._audit.entry(
            event,
            update.app_id,
            kind=update.kind,
            who=self._who,
            version=update.version,
            masked_token=update.masked,
            reason=reason,
        )

    def record(self, event: AuditEvent, update: TokenUpdate, reason: str | None) -> None:
        """An audit entry about `update` by this issuer (recording never raises)."""
        if self._audit is not None:
            self._audit.append(self._entry(event, update, reason))
