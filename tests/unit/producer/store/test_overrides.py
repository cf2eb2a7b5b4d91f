"""`issue_override()`: the override use case `wxtoken set` and the gateway share, returning
what happened (published, stored but not published, refused by a newer version, refused by
a skewed clock) instead of each caller writing it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import fakeredis
import pytest

from consumer_lib.errors import BrokerError
from consumer_lib.wire.keys import KeyLayout
from consumer_lib.wire.update import TokenKind, TokenSource, TokenUpdate
from producer.store.audit import AuditLog
from producer.store.issuing import Issuer
from producer.store.overrides import Overridden, OverrideOutcome, issue_override
from producer.store.tokens import TokenStore
from tests.conftest import FakeClock
from tests.unit._helpers import make_update, redis_on_clock

APP = "wxoverride000002"
TOKEN = "OVERRIDE-" + "w" * 30


class Broker:
    """Opens a publisher (or fails to, `away`); its publish fails while `down`."""

    def __init__(self) -> None:
        self.published: list[TokenUpdate] = []
        self.opened = 0
        self.away = False
        self.down = False

    @contextmanager
    def open(self) -> Iterator[Callable[[TokenUpdate, float], None]]:
        if self.away:
            raise BrokerError("connection refused")
        self.opened += 1

        def publish(update: TokenUpdate, now_s: float) -> None:
            del now_s
            if self.down:
                raise BrokerError("broker closed the channel")
            self.published.append(update)

        yield publish


class Rig:
    def __init__(self, clock: FakeClock, redis_clock: FakeClock | None = None) -> None:
        self.clock = clock
        self.client: fakeredis.FakeRedis = redis_on_clock(redis_clock or clock)
        self.store = TokenStore(self.client, KeyLayout())
        self.audit = AuditLog(self.client, KeyLayout(), clock=clock)
        self.broker = Broker()
        self.issuer = Issuer(self.store, audit=self.audit, who="ops:alice@host")

    def override(self) -> Overridden:
        return issue_override(
            self.issuer,
            self.broker.open,
            APP,
            TokenKind.ACCESS_TOKEN,
            TOKEN,
            clock=self.clock,
            expires_in_s=600,
            reason="producer down",
        )

    def nothing_audited_or_published(self) -> bool:
        return self.audit.read(APP) == [] and self.broker.published == []


def test_an_override_is_stored_audited_and_published_once(clock: FakeClock) -> None:
    rig = Rig(clock)
    done = rig.override()
    assert done.outcome is OverrideOutcome.PUBLISHED
    assert done.written
    update = done.update
    assert update is not None
    assert (update.source, update.producer_id) == (TokenSource.OVERRIDE, "ops:alice@host")
    assert update.expires_at == pytest.approx(clock() + 600)
    assert rig.store.read(APP) == update
    assert rig.broker.published == [update]
    [entry] = rig.audit.read(APP)
    assert (entry.event, entry.version, entry.reason) == (
        "override",
        update.version,
        "producer down",
    )


def test_a_clock_8_hours_fast_is_refused_before_anything_is_written(clock: FakeClock) -> None:
    """`SKEWED`, carrying the skew; no version allocated, nothing stored, audited or
    published."""
    rig = Rig(clock, redis_clock=FakeClock(clock.now_s - 8 * 3600))
    done = rig.override()
    assert done.outcome is OverrideOutcome.SKEWED
    assert not done.written
    assert done.update is None
    assert done.skewed is not None
    assert "+28800.0 s from Redis's" in str(done.skewed)
    assert rig.store.read(APP) is None
    assert rig.nothing_audited_or_published()


def test_losing_the_compare_and_set_is_refused_naming_what_redis_holds(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another writer stores a newer version between the override's version and its write:
    `REFUSED`, the newer version kept, nothing audited or published."""
    rig = Rig(clock)
    allocate = rig.store.next_version
    newer: list[TokenUpdate] = []

    def racing(app_id: str, kind: TokenKind, *, now_s: float) -> int:
        version = allocate(app_id, kind, now_s=now_s)
        newer.append(make_update(app_id=app_id, version=version + 5, issued_at=now_s))
        assert rig.store.write(newer[0]).written
        return version

    monkeypatch.setattr(rig.store, "next_version", racing)
    done = rig.override()
    assert done.outcome is OverrideOutcome.REFUSED
    assert not done.written
    assert f"holds version {newer[0].version} of {APP}/access_token" in done.refusal
    assert rig.store.read(APP) == newer[0]
    assert rig.nothing_audited_or_published()


def test_publishing_failing_after_the_write_says_stored_but_not_published(
    clock: FakeClock,
) -> None:
    """`UNPUBLISHED`: Redis and the audit trail hold it (subscribers find it in the
    snapshot), with the broker's error to say why it was not published."""
    rig = Rig(clock)
    rig.broker.down = True
    done = rig.override()
    assert done.outcome is OverrideOutcome.UNPUBLISHED
    assert done.written
    assert done.update is not None
    assert rig.store.read(APP) == done.update
    assert [e.version for e in rig.audit.read(APP)] == [done.update.version]
    assert rig.broker.published == []
    assert "broker closed the channel" in str(done.publish_error)


def test_a_broker_that_is_away_changes_nothing(clock: FakeClock) -> None:
    """The broker is reached before anything is written: its failure is raised, and Redis
    holds nothing."""
    rig = Rig(clock)
    rig.broker.away = True
    with pytest.raises(BrokerError, match="connection refused"):
        rig.override()
    assert rig.store.read(APP) is None
    assert rig.nothing_audited_or_published()
