"""`Issuer.issue()`: version, compare-and-set, audit, publish, in one place for the
refresher and `wxtoken set`."""

from __future__ import annotations

import fakeredis
import pytest

from consumer_lib.errors import StoreError
from consumer_lib.wire.keys import KeyLayout
from consumer_lib.wire.update import TokenKind, TokenSource, TokenUpdate
from producer.store.audit import AuditEvent, AuditLog
from producer.store.issuing import IssueOutcome, Issuer
from producer.store.tokens import TokenStore, WriteResult
from tests.conftest import FakeClock
from tests.unit._helpers import CountingRedis, make_update, unreachable_redis


@pytest.fixture
def client() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


def issuer_for(client: object, clock: FakeClock) -> Issuer:
    return Issuer(
        TokenStore(client, KeyLayout()),  # type: ignore[arg-type]
        audit=AuditLog(client, KeyLayout(), clock=clock),  # type: ignore[arg-type]
        who="ops:alice@host",
    )


def fresh(issuer: Issuer, clock: FakeClock, value: str = "TOKEN-new-0123456789") -> TokenUpdate:
    version = issuer.new_version("wxapp1", TokenKind.ACCESS_TOKEN, now_s=clock())
    return make_update(value=value, version=version, issued_at=clock(), source=TokenSource.OVERRIDE)


def test_an_issued_token_is_stored_recorded_and_published(
    client: fakeredis.FakeRedis, clock: FakeClock
) -> None:
    """One call: Redis holds it, the audit trail names it (masked), it is published once."""
    issuer = issuer_for(client, clock)
    update = fresh(issuer, clock)
    issued = issuer.issue(update, event=AuditEvent.OVERRIDE, reason="x")
    assert issued.outcome is IssueOutcome.WRITTEN
    assert issued.published  # the caller publishes it now
    assert TokenStore(client, KeyLayout()).read("wxapp1") == update
    [entry] = AuditLog(client, KeyLayout(), clock=clock).read("wxapp1")
    assert (entry.event, entry.version, entry.who) == ("override", update.version, "ops:alice@host")
    assert entry.masked_token == update.masked
    assert update.value not in repr(entry)


def test_versions_keep_rising(client: fakeredis.FakeRedis, clock: FakeClock) -> None:
    """Each new version is above every one handed out before."""
    issuer = issuer_for(client, clock)
    versions = [
        issuer.new_version("wxapp1", TokenKind.ACCESS_TOKEN, now_s=clock()) for _ in range(5)
    ]
    assert versions == sorted(set(versions))


def test_a_stale_version_is_refused_and_neither_recorded_nor_published(
    client: fakeredis.FakeRedis, clock: FakeClock
) -> None:
    """When Redis holds a newer version, nothing else happens; the newer one is returned."""
    issuer = issuer_for(client, clock)
    old = fresh(issuer, clock, "TOKEN-old-0123456789")
    newer = fresh(issuer, clock, "TOKEN-newer-0123456789")
    assert issuer.issue(newer, event=AuditEvent.OVERRIDE, reason=None).published
    issued = issuer.issue(old, event=AuditEvent.OVERRIDE, reason=None)
    assert issued.outcome is IssueOutcome.REFUSED
    assert issued.stored == newer
    assert not issued.published
    assert len(AuditLog(client, KeyLayout(), clock=clock).read("wxapp1")) == 1


def test_a_writer_without_the_lease_is_fenced(
    client: fakeredis.FakeRedis, clock: FakeClock
) -> None:
    """A fence owner that does not hold the lease writes, records and publishes nothing."""
    issuer = issuer_for(client, clock)
    client.set(KeyLayout().leader, "7|someone-else")
    issued = issuer.issue(
        fresh(issuer, clock),
        event=AuditEvent.REFRESH,
        reason="scheduled",
        fence_owner="me",
    )
    assert issued.outcome is IssueOutcome.FENCED
    assert not issued.published
    assert TokenStore(client, KeyLayout()).read("wxapp1") is None
    assert AuditLog(client, KeyLayout(), clock=clock).read("wxapp1") == []


def test_redis_away_raises_unless_publishing_unsaved_is_allowed(clock: FakeClock) -> None:
    """The CLI's override must land in Redis first (StoreError); the producer publishes a
    fresh token anyway and is told it is unsaved."""
    issuer = issuer_for(unreachable_redis(), clock)
    update = make_update(version=5, issued_at=clock())
    with pytest.raises(StoreError):
        issuer.issue(update, event=AuditEvent.OVERRIDE, reason=None)
    issued = issuer.issue(
        update,
        event=AuditEvent.REFRESH,
        reason="scheduled",
        publish_unsaved=True,
    )
    assert issued.outcome is IssueOutcome.UNSAVED
    assert isinstance(issued.error, StoreError)
    assert issued.published


def test_skipping_the_write_needs_publish_unsaved(
    client: fakeredis.FakeRedis, clock: FakeClock
) -> None:
    """An update may skip Redis only when it may go out unsaved."""
    issuer = issuer_for(client, clock)
    with pytest.raises(ValueError, match="unsaved"):
        issuer.issue(fresh(issuer, clock), event=AuditEvent.REFRESH, reason=None, write=False)


def test_an_issue_is_one_redis_round_trip_with_its_audit_entry(clock: FakeClock) -> None:
    """The compare-and-set adds the audit entry in the same call: one round trip."""
    client = CountingRedis()
    issuer = issuer_for(client, clock)
    update = fresh(issuer, clock)
    client.sent.clear()
    issuer.issue(update, event=AuditEvent.OVERRIDE, reason="x")
    assert client.sent == ["FCALL wxtoken_store_compare_and_set"]
    [entry] = AuditLog(client, KeyLayout(), clock=clock).read("wxapp1")
    assert (entry.event, entry.version, entry.reason) == ("override", update.version, "x")


def test_an_unsaved_update_is_recorded_by_the_write_that_lands_it(
    client: fakeredis.FakeRedis, clock: FakeClock
) -> None:
    """Not written (Redis known to be away), the token is published unsaved and carries its
    entry, stamped when issued; the later write adds it, once."""
    issuer = issuer_for(client, clock)
    update = fresh(issuer, clock)
    issued = issuer.issue(
        update,
        event=AuditEvent.REFRESH,
        reason="scheduled",
        write=False,
        publish_unsaved=True,
    )
    assert issued.outcome is IssueOutcome.UNSAVED
    assert AuditLog(client, KeyLayout(), clock=clock).read("wxapp1") == []
    issued_at_s = clock()
    clock.advance(30)
    result = issuer.write_unsaved(update, audit_entry=issued.audit_entry, fence_owner=None)
    assert result.written
    [entry] = AuditLog(client, KeyLayout(), clock=clock).read("wxapp1")
    assert (entry.event, entry.version, entry.reason) == ("refresh", update.version, "scheduled")
    assert entry.at_s == pytest.approx(issued_at_s)


class LostReplyStore(TokenStore):
    """Its first write lands (with its audit entry) but the reply never comes back."""

    lost = 0

    def write(self, update: TokenUpdate, **kwargs: object) -> WriteResult:  # type: ignore[override]
        result = super().write(update, **kwargs)  # type: ignore[arg-type]
        if self.lost == 0:
            self.lost += 1
            raise StoreError("connection reset while reading the reply")
        return result


def test_a_write_that_landed_unseen_is_not_recorded_twice(
    client: fakeredis.FakeRedis, clock: FakeClock
) -> None:
    """The compare-and-set landed with its entry but every retry's reply was lost: the
    token goes out unsaved, and writing it again finds its own write (a replay) and adds
    no second entry."""
    issuer = Issuer(
        LostReplyStore(client, KeyLayout()),
        audit=AuditLog(client, KeyLayout(), clock=clock),
        who="prod-a",
    )
    update = fresh(issuer, clock)
    issued = issuer.issue(
        update, event=AuditEvent.REFRESH, reason="scheduled", publish_unsaved=True
    )
    assert issued.outcome is IssueOutcome.UNSAVED
    result = issuer.write_unsaved(update, audit_entry=issued.audit_entry, fence_owner=None)
    assert result.written
    assert result.replayed
    entries = AuditLog(client, KeyLayout(), clock=clock).read("wxapp1")
    assert [(e.event, e.version) for e in entries] == [("refresh", update.version)]
