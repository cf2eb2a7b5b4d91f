"""The refresher and `Issuer` on harden's store answers: an unconfirmed write is written
again, a poisoned version counter spends no upstream call."""

from __future__ import annotations

import fakeredis
import pytest
from pydantic import SecretStr

from consumer_lib.wire.keys import KeyLayout
from consumer_lib.wire.update import TokenKind, TokenSource, TokenUpdate
from producer.apps import AppConfig
from producer.refresh.refresher import RefreshTiming
from producer.store.audit import AuditEvent, AuditLog, AuditRecord
from producer.store.issuing import IssueOutcome, Issuer
from producer.store.tokens import TokenStore, VersionPoisoned, WriteResult
from producer.upstream.wechat import FetchedToken
from tests.conftest import FakeClock
from tests.unit._helpers import CountingRedis, make_update
from tests.unit.producer.builders import build_refresher

APP = "wxapp1"


class CountingFetcher:
    def __init__(self) -> None:
        self.calls = 0

    def fetch(self, app: AppConfig, *, force_refresh: bool = False) -> FetchedToken:
        self.calls += 1
        return FetchedToken(f"TOKEN-{self.calls:04d}-0123456789", 7200)


def unconfirmed(
    update: TokenUpdate, *, fence_owner: str | None = None, audit: AuditRecord | None = None
) -> WriteResult:
    return WriteResult(written=True, confirmed=False)


@pytest.mark.parametrize(("publish_unsaved", "outcome"), [(True, "unsaved"), (False, "written")])
def test_an_unconfirmed_write_is_unsaved_for_the_producer_written_for_the_cli(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch, publish_unsaved: bool, outcome: str
) -> None:
    store = TokenStore(fakeredis.FakeRedis(), KeyLayout())
    monkeypatch.setattr(store, "write", unconfirmed)
    update = make_update(version=5, issued_at=clock(), source=TokenSource.OVERRIDE)
    issued = Issuer(store, audit=None, who="x").issue(
        update,
        event=AuditEvent.OVERRIDE,
        reason=None,
        publish_unsaved=publish_unsaved,
    )
    assert issued.outcome is IssueOutcome(outcome)
    assert issued.published


def test_an_unconfirmed_write_is_written_again(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No replica confirmed the fetched token: the next steps write the same update again
    until one does (a replay of it counts as written)."""
    client = fakeredis.FakeRedis()
    store = TokenStore(client, KeyLayout())
    real_write = store.write
    writes: list[TokenUpdate] = []

    def flaky(
        update: TokenUpdate, *, fence_owner: str | None = None, audit: AuditRecord | None = None
    ) -> WriteResult:
        writes.append(update)
        result = real_write(update, fence_owner=fence_owner, audit=audit)
        return WriteResult(written=result.written, confirmed=len(writes) > 1)

    monkeypatch.setattr(store, "write", flaky)
    fetcher = CountingFetcher()
    refresher = build_refresher(
        AppConfig(app_id=APP, secret=SecretStr("s3cret-value-0123")),
        fetcher=fetcher,
        store=store,
        clock=clock,
    )
    refresher.step()
    clock.advance(refresher.step())
    refresher.step()
    assert fetcher.calls == 1
    assert len(writes) >= 2
    assert all(w == writes[0] for w in writes)
    assert TokenStore(client, KeyLayout()).read(APP) == writes[0]


def test_a_leaders_refresh_spends_two_redis_round_trips(clock: FakeClock) -> None:
    """As the service runs it (a follower feeds the snapshots), a due refresh reads its
    snapshot with the fetch's fencing version, then writes the token with its audit entry."""
    client = CountingRedis()
    store = TokenStore(client, KeyLayout())
    audit = AuditLog(client, KeyLayout(), clock=clock)
    refresher = build_refresher(
        AppConfig(app_id=APP, secret=SecretStr("s3cret-value-0123")),
        fetcher=CountingFetcher(),
        store=store,
        clock=clock,
        audit=audit,
        follows_store=False,
    )
    refresher.step()  # the first fetch; Redis has checked (and loaded) the functions by now
    held = refresher.held
    assert held is not None
    clock.now_s = RefreshTiming().refresh_at(held)
    client.sent.clear()
    refresher.step()
    assert client.sent == [
        "FCALL wxtoken_store_next_version",
        "FCALL wxtoken_store_compare_and_set",
    ]
    new = refresher.held
    assert new is not None
    assert new.version > held.version
    assert store.read(APP) == new
    assert [(e.version, e.reason) for e in audit.read(APP)] == [
        (new.version, "scheduled"),
        (held.version, "none held"),
    ]


def test_a_poisoned_version_counter_spends_no_upstream_call(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = TokenStore(fakeredis.FakeRedis(), KeyLayout())

    def poisoned(app_id: str, kind: TokenKind, *, now_s: float) -> int:
        raise VersionPoisoned(f"{app_id}/{kind}: no valid version left")

    # A refresh about to fetch takes its version with the snapshot; either way, poisoned.
    monkeypatch.setattr(store, "next_version", poisoned)
    monkeypatch.setattr(store, "read_with_version", poisoned)
    fetcher = CountingFetcher()
    published: list[TokenUpdate] = []
    refresher = build_refresher(
        AppConfig(app_id=APP, secret=SecretStr("s3cret-value-0123")),
        fetcher=fetcher,
        store=store,
        publish=published.append,
        clock=clock,
    )
    refresher.step()
    assert fetcher.calls == 0
    assert published == []
    assert refresher.held is None
