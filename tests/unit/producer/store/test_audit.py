"""The audit trail: `AuditLog` on fakeredis, and what `AppRefresher` records in it."""

from __future__ import annotations

import logging

import fakeredis
import pytest
from pydantic import SecretStr

from consumer_lib import TokenUpdate
from consumer_lib.errors import StoreError
from consumer_lib.wire.keys import KeyLayout
from consumer_lib.wire.refresh_request import RefreshRequest
from consumer_lib.wire.update import mask
from producer.apps import AppConfig, TokenApi
from producer.limits.budget import RefreshBudget
from producer.refresh.refresher import RefreshTiming
from producer.store.audit import AuditEntry, AuditEvent, AuditLog, audit_key, safe_mask
from producer.store.tokens import TokenStore
from producer.upstream.wechat import FetchedToken
from tests.conftest import FakeClock
from tests.unit._helpers import T0
from tests.unit.producer.builders import build_refresher

KEYS = KeyLayout("audit-test")
APP_ID = "wxapp1"
TOKEN = "SECRET_token_0123456789abcdefghijklmnopqrstuvwxyz"


@pytest.fixture
def server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


@pytest.fixture
def client(server: fakeredis.FakeServer) -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis(server=server)


@pytest.fixture
def audit(client: fakeredis.FakeRedis, clock: FakeClock) -> AuditLog:
    return AuditLog(client, KEYS, clock=clock)


def raw_stream(client: fakeredis.FakeRedis) -> bytes:
    """Every byte of every entry in the stream, to search for whole tokens."""
    return b"".join(
        entry_id + b"".join(name + b"=" + value for name, value in fields.items())
        for entry_id, fields in client.xrange(audit_key(KEYS))
    )


# ------------------------------------------------------------------ AuditLog
def test_record_and_read_round_trip(audit: AuditLog, clock: FakeClock) -> None:
    """Every field recorded comes back, under `{prefix}:audit`, with the clock's time."""
    audit.record(
        AuditEvent.OVERRIDE,
        APP_ID,
        who="ops:alice@host",
        version=42,
        masked_token=mask(TOKEN),
        reason="WeChat outage",
    )
    [entry] = audit.read(APP_ID)
    assert audit.key == "audit-test:audit"
    assert entry == AuditEntry(
        id=entry.id,
        at_s=clock.now_s,
        event="override",
        app_id=APP_ID,
        kind="access_token",
        who="ops:alice@host",
        version=42,
        masked_token=mask(TOKEN),
        reason="WeChat outage",
    )


def test_optional_fields_are_left_out(audit: AuditLog, client: fakeredis.FakeRedis) -> None:
    """An entry without version, token or reason stores only the required fields."""
    audit.record(AuditEvent.REFRESH_REQUEST, APP_ID, who="prod-a")
    [(_, fields)] = client.xrange(audit_key(KEYS))
    assert set(fields) == {b"at", b"event", b"app_id", b"kind", b"who"}
    [entry] = audit.read(None)
    assert (entry.version, entry.masked_token, entry.reason) == (None, None, None)


def test_read_is_newest_first_and_limited(audit: AuditLog, clock: FakeClock) -> None:
    """Entries come back newest first, at most `limit` of them."""
    for version in range(1, 6):
        audit.record(AuditEvent.REFRESH, APP_ID, who="prod-a", version=version)
        clock.advance(1)
    assert [e.version for e in audit.read(APP_ID)] == [5, 4, 3, 2, 1]
    assert [e.version for e in audit.read(APP_ID, limit=2)] == [5, 4]
    assert [e.at_s for e in audit.read(None, limit=2)] == [T0 + 4, T0 + 3]


def test_read_filters_by_app_across_many_batches(audit: AuditLog) -> None:
    """One app's entries are found behind more than one read batch of other apps' entries."""
    audit.record(AuditEvent.REFRESH, "wxold", who="prod-a", version=1)
    for version in range(1200):
        audit.record(AuditEvent.REFRESH, "wxbusy", who="prod-a", version=version + 1)
    audit.record(AuditEvent.OVERRIDE, "wxold", who="ops:bob@h", version=2)
    assert [(e.event, e.version) for e in audit.read("wxold")] == [
        ("override", 2),
        ("refresh", 1),
    ]
    assert {e.app_id for e in audit.read("wxbusy", limit=600)} == {"wxbusy"}
    assert len(audit.read("wxbusy", limit=600)) == 600
    assert audit.read("wxnone") == []


@pytest.mark.parametrize(("node_entries", "slack"), [(4, 4), (100, 100)])
def test_the_stream_is_capped_near_max_entries(
    client: fakeredis.FakeRedis, clock: FakeClock, node_entries: int, slack: int
) -> None:
    """`MAXLEN ~` keeps the one stream of all apps within a node's worth above the cap."""
    client.config_set("stream-node-max-entries", node_entries)
    audit = AuditLog(client, KEYS, max_entries=10, clock=clock)
    lengths = []
    for n in range(300):
        audit.record(AuditEvent.REFRESH, f"wxapp{n % 7}", who="prod-a", version=n + 1)
        lengths.append(client.xlen(audit_key(KEYS)))
    assert max(lengths) <= 10 + slack
    assert lengths[-1] >= 10
    assert audit.read(None, limit=1)[0].version == 300


def test_a_redis_outage_drops_entries_with_one_warning(
    server: fakeredis.FakeServer,
    audit: AuditLog,
    client: fakeredis.FakeRedis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With Redis down `record` raises nothing and warns once per outage; then it records."""
    caplog.set_level(logging.INFO, logger="producer.store.audit")
    server.connected = False
    for version in (1, 2, 3):
        audit.record(AuditEvent.REFRESH, APP_ID, who="prod-a", version=version)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "Redis (audit trail) unreachable: ConnectionError" in warnings[0].getMessage()
    server.connected = True
    audit.record(AuditEvent.REFRESH, APP_ID, who="prod-a", version=4)
    assert [e.version for e in audit.read(APP_ID)] == [4]
    assert "Redis (audit trail) available again" in caplog.text
    server.connected = False
    audit.record(AuditEvent.REFRESH, APP_ID, who="prod-a", version=5)
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 2


def test_read_with_redis_down_raises_store_error(
    server: fakeredis.FakeServer, audit: AuditLog
) -> None:
    """Reading, unlike recording, reports an outage: as `StoreError`."""
    server.connected = False
    with pytest.raises(StoreError, match="reading the audit trail"):
        audit.read(None)


def test_malformed_entries_are_skipped(audit: AuditLog, client: fakeredis.FakeRedis) -> None:
    """Entries missing a field, with a bad number, or not UTF-8 are skipped, not fatal."""
    key = audit_key(KEYS)
    good = {"event": "refresh", "app_id": APP_ID, "kind": "access_token", "who": "prod-a"}
    audit.record(AuditEvent.REFRESH, APP_ID, who="prod-a", version=1)
    client.xadd(key, {"at": "1800000000.0", "event": "refresh"})
    client.xadd(key, {**good, "at": "yesterday"})
    client.xadd(key, {**good, "at": "-5"})
    client.xadd(key, {**good, "at": "1800000000.0", "version": "v2"})
    client.xadd(key, {**good, "at": "1800000000.0", "who": b"\xff\xfe"})
    client.xadd(key, {**good, "at": "1800000000.0", "event": ""})
    audit.record(AuditEvent.REFRESH, APP_ID, who="prod-a", version=3)
    assert [e.version for e in audit.read(APP_ID)] == [3, 1]


def test_a_whole_token_is_never_stored_or_shown(
    audit: AuditLog, client: fakeredis.FakeRedis
) -> None:
    """A whole token passed by mistake, or written into the stream by hand, stays masked."""
    audit.record(AuditEvent.OVERRIDE, APP_ID, who="ops:a@h", masked_token=TOKEN)
    assert TOKEN.encode() not in raw_stream(client)
    client.xadd(
        audit_key(KEYS),
        {"at": "1800000000.0", "event": "override", "app_id": APP_ID, "kind": "access_token"}
        | {"who": "someone", "masked_token": TOKEN},
    )
    assert [e.masked_token for e in audit.read(APP_ID)] == [mask(TOKEN), mask(TOKEN)]


@pytest.mark.parametrize("value", ["short", "x" * 12, TOKEN, "y" * 512])
def test_mask_output_passes_safe_mask_unchanged(value: str) -> None:
    """`safe_mask` keeps what `mask()` made, so the stored token is exactly the masked one."""
    assert safe_mask(mask(value)) == mask(value)
    assert safe_mask(value) == mask(value)


def test_the_reason_is_capped(audit: AuditLog) -> None:
    """A reason longer than 256 characters is cut, not refused."""
    audit.record(AuditEvent.OVERRIDE, APP_ID, who="ops:a@h", reason="r" * 1000)
    assert audit.read(APP_ID)[0].reason == "r" * 256


def test_max_entries_must_be_positive(client: fakeredis.FakeRedis) -> None:
    """A cap below one is a programming error, refused at construction."""
    with pytest.raises(ValueError, match="max_entries"):
        AuditLog(client, KEYS, max_entries=0)


# ------------------------------------------------------------------ AppRefresher hooks
class Fetcher:
    """A new unique token per call; records whether `force_refresh` was asked."""

    def __init__(self) -> None:
        self.forced: list[bool] = []

    def fetch(self, app: AppConfig, *, force_refresh: bool = False) -> FetchedToken:
        self.forced.append(force_refresh)
        return FetchedToken(value=f"TOKEN-{len(self.forced):04d}-{'z' * 40}", expires_in_s=7200)


class Rig:
    """A refresher on fakeredis with an audit log in the same Redis (as the producer has it:
    the write of a new version adds its entry)."""

    def __init__(self, clock: FakeClock, *, forced_per_day: int = 20) -> None:
        self.clock = clock
        self.redis = fakeredis.FakeRedis()
        self.audit = AuditLog(self.redis, KEYS, clock=clock)
        self.fetcher = Fetcher()
        self.published: list[TokenUpdate] = []
        self.timing = RefreshTiming()
        self.refresher = build_refresher(
            AppConfig(app_id=APP_ID, secret=SecretStr("s3cret"), token_api=TokenApi.STABLE),
            fetcher=self.fetcher,
            store=TokenStore(self.redis, KEYS),
            publish=self.published.append,
            timing=self.timing,
            budget=RefreshBudget(self.redis, KEYS, clock=clock, forced_per_day=forced_per_day),
            clock=clock,
            audit=self.audit,
        )

    @property
    def held(self) -> TokenUpdate:
        assert self.refresher.held is not None
        return self.refresher.held

    def report(self, token: str, times: int, requester: str = "client:svc-a") -> None:
        for _ in range(times):
            self.refresher.request_refresh(
                RefreshRequest.for_token(APP_ID, token, requester=requester, now_s=self.clock())
            )

    def entries(self) -> list[AuditEntry]:
        return self.audit.read(APP_ID, limit=100)

    def assert_no_whole_token(self) -> None:
        stream = raw_stream(self.redis)
        for update in self.published:
            assert update.value.encode() not in stream


def test_refreshes_record_the_producer_reason_version_and_masked_token(
    clock: FakeClock,
) -> None:
    """The first fetch is `none held`, the next one `scheduled`, each with its masked token."""
    rig = Rig(clock)
    rig.refresher.step()
    first = rig.held
    clock.now_s = rig.timing.refresh_at(first)
    rig.refresher.step()
    second = rig.held
    assert second.version > first.version
    assert [(e.event, e.who, e.version, e.masked_token, e.reason) for e in rig.entries()] == [
        ("refresh", "prod-test", second.version, second.masked, "scheduled"),
        ("refresh", "prod-test", first.version, first.masked, "none held"),
    ]
    rig.assert_no_whole_token()


def test_an_expired_token_is_refreshed_with_reason_expired(clock: FakeClock) -> None:
    """A token found expired when the refresh runs is recorded as `expired`."""
    rig = Rig(clock)
    rig.refresher.step()
    clock.now_s = rig.held.expires_at + 1
    rig.refresher.step()
    assert rig.entries()[0].reason == "expired"


def test_a_batch_of_reports_records_one_request_and_one_forced_refresh(clock: FakeClock) -> None:
    """200 reports of the current token and 3 of an old one: one entry with the counts."""
    rig = Rig(clock)
    rig.refresher.step()
    rejected = rig.held
    rig.report(rejected.value, 150, requester="client:svc-a")
    rig.report(rejected.value, 50, requester="ops:alice@h")
    rig.report("an-older-token-value-xyz", 3, requester="client:svc-b")
    rig.refresher.step()
    new, request, _first = rig.entries()
    assert (request.event, request.who) == ("refresh_request", "prod-test")
    assert request.version == rejected.version
    assert request.masked_token == rejected.masked
    assert request.reason == (
        "203 report(s), 200 of the current token, 3 of older ones; "
        "0 refuted upstream, 0 over budget, 1 refresh(es); "
        "from client:svc-a, client:svc-b, ops:alice@h"
    )
    assert (new.event, new.version, new.masked_token) == (
        "forced_refresh",
        rig.held.version,
        rig.held.masked,
    )
    assert new.reason is not None
    assert new.reason.startswith("reported rejected (200 reports)")
    assert rig.fetcher.forced == [False, True]
    rig.assert_no_whole_token()


def test_reports_from_many_requesters_name_a_few(clock: FakeClock) -> None:
    """A batch from many requesters names three and says there were others."""
    rig = Rig(clock)
    rig.refresher.step()
    for n in range(10):
        rig.report("an-older-token-value-xyz", 1, requester=f"client:svc-{n}")
    rig.refresher.step()
    [request] = [e for e in rig.entries() if e.event == "refresh_request"]
    assert request.reason is not None
    assert request.reason.startswith("10 report(s), 0 of the current token, 10 of older ones")
    assert request.reason.endswith(" and others")
    assert request.reason.count("client:svc-") == 3


def test_reports_over_budget_are_recorded(clock: FakeClock) -> None:
    """With no forced refresh left, the batch is recorded, then `request_over_budget`."""
    rig = Rig(clock, forced_per_day=0)
    rig.refresher.step()
    held = rig.held
    rig.report(held.value, 4)
    rig.refresher.step()
    over, request, _first = rig.entries()
    assert request.event == "refresh_request"
    assert (over.event, over.who, over.version, over.masked_token) == (
        "request_over_budget",
        "prod-test",
        held.version,
        held.masked,
    )
    assert over.reason is not None
    assert over.reason.startswith("reported rejected (4 reports); ")
    assert rig.fetcher.forced == [False]


def test_an_audit_outage_does_not_stop_refreshing(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """With the audit trail refused by Redis (its key holds another type), tokens are still
    fetched, stored and published, and the outage is logged once; the entries are dropped."""
    rig = Rig(clock)
    rig.redis.set(audit_key(KEYS), "not a stream")
    rig.refresher.step()
    clock.now_s = rig.timing.refresh_at(rig.held)
    rig.refresher.step()
    assert rig.fetcher.forced == [False, False]
    assert len(rig.published) == 2
    assert TokenStore(rig.redis, KEYS).read(APP_ID) == rig.published[-1]
    audit_warnings = [
        r
        for r in caplog.records
        if r.name == "producer.store.audit" and r.levelno == logging.WARNING
    ]
    assert len(audit_warnings) == 1
    rig.redis.delete(audit_key(KEYS))
    assert rig.entries() == []


def test_a_token_issued_while_redis_is_away_is_recorded_once_when_written(
    clock: FakeClock,
) -> None:
    """Fetched and published during a Redis outage, the token is written once Redis is back,
    and its entry (`refresh`, stamped when it was issued) with it: one entry per version."""
    server = fakeredis.FakeServer()
    client = fakeredis.FakeRedis(server=server)
    timing = RefreshTiming()
    published: list[TokenUpdate] = []
    refresher = build_refresher(
        AppConfig(app_id=APP_ID, secret=SecretStr("s3cret"), token_api=TokenApi.STABLE),
        fetcher=Fetcher(),
        store=TokenStore(client, KEYS),
        publish=published.append,
        timing=timing,
        clock=clock,
        audit=AuditLog(client, KEYS, clock=clock),
    )
    refresher.step()
    server.connected = False
    clock.now_s = timing.refresh_at(published[-1])
    refresher.step()  # finds Redis away; fetches and publishes unsaved
    issued_at_s = published[-1].issued_at
    assert len(published) == 2
    server.connected = True
    clock.advance(timing.store_retry_s)
    refresher.step()
    entries = AuditLog(client, KEYS, clock=clock).read(APP_ID)
    assert [(e.event, e.version) for e in entries] == [
        ("refresh", published[1].version),
        ("refresh", published[0].version),
    ]
    assert entries[0].at_s == pytest.approx(issued_at_s)
    assert TokenStore(client, KEYS).read(APP_ID) == published[1]
