"""The gateway's override use case: issued through `Issuer` as `wxtoken set` does it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from consumer_lib import BrokerError, TokenKind, TokenSource, TokenUpdate
from consumer_lib.wire.keys import KeyLayout
from ops.gateway._override import Overrider, OverrideRefused, Publish, PublishFailed
from producer.leadership.clock_skew import ClockSkewed
from producer.store.audit import AuditLog
from producer.store.tokens import TokenStore
from tests.conftest import FakeClock
from tests.unit._helpers import make_update, redis_on_clock
from tests.unit.ops.gateway.test_gateway_app import APP as HARNESS_APP
from tests.unit.ops.gateway.test_gateway_app import Harness

APP = "wxoverride000001"
TOKEN = "OVERRIDE-" + "v" * 30


class Broker:
    def __init__(self) -> None:
        self.published: list[TokenUpdate] = []
        self.down = False

    @contextmanager
    def open(self) -> Iterator[Publish]:
        def publish(update: TokenUpdate, now_s: float) -> None:
            del now_s
            if self.down:
                raise BrokerError("broker closed the channel")
            self.published.append(update)

        yield publish


def _overrider(
    clock: FakeClock, redis_clock: Callable[[], float] | None = None
) -> tuple[Overrider, TokenStore, AuditLog, Broker]:
    """An overrider on `clock`, Redis's `TIME` on `redis_clock` (by default the same)."""
    redis_client = redis_on_clock(redis_clock or clock)
    store = TokenStore(redis_client, KeyLayout())
    audit = AuditLog(redis_client, KeyLayout(), clock=clock)
    broker = Broker()
    overrider = Overrider(
        store=store, audit=audit, open_publisher=broker.open, operator="gw", clock=clock
    )
    return overrider, store, audit, broker


def test_override_is_stored_audited_with_the_key_name_and_published(clock: FakeClock) -> None:
    overrider, store, audit, broker = _overrider(clock)
    update = overrider.override(
        APP, TokenKind.ACCESS_TOKEN, TOKEN, expires_in_s=600, reason="manual", key_name="ci"
    )
    assert update.source is TokenSource.OVERRIDE
    assert update.producer_id == "gw/key:ci"
    assert update.expires_at == pytest.approx(clock() + 600)
    assert store.read(APP) == update
    assert broker.published == [update]
    [entry] = audit.read(APP)
    assert (entry.event, entry.who, entry.version) == ("override", "gw/key:ci", update.version)
    assert TOKEN not in (entry.masked_token or "")


def test_override_losing_a_race_changes_nothing(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another writer stores a newer version between the override's version and its write:
    refused, naming what Redis holds, and neither audited nor published."""
    overrider, store, audit, broker = _overrider(clock)
    allocate = store.next_version
    newer: list[TokenUpdate] = []

    def racing(app_id: str, kind: TokenKind, *, now_s: float) -> int:
        version = allocate(app_id, kind, now_s=now_s)
        newer.append(make_update(app_id=app_id, version=version + 5, issued_at=now_s))
        assert store.write(newer[0]).written
        return version

    monkeypatch.setattr(store, "next_version", racing)
    with pytest.raises(OverrideRefused) as refused:
        overrider.override(
            APP, TokenKind.ACCESS_TOKEN, TOKEN, expires_in_s=600, reason=None, key_name="ci"
        )
    assert f"holds version {newer[0].version} of {APP}/access_token" in str(refused.value)
    assert store.read(APP) == newer[0]
    assert broker.published == []
    assert audit.read(APP) == []


def test_override_stored_but_not_published_says_so(clock: FakeClock) -> None:
    overrider, store, _, broker = _overrider(clock)
    broker.down = True
    with pytest.raises(PublishFailed, match="publishing failed"):
        overrider.override(
            APP, TokenKind.ACCESS_TOKEN, TOKEN, expires_in_s=600, reason=None, key_name="ci"
        )
    stored = store.read(APP)
    assert stored is not None
    assert stored.value == TOKEN


def test_override_from_a_clock_8_hours_fast_is_refused_and_changes_nothing(
    clock: FakeClock,
) -> None:
    """The gateway's clock 8 h ahead of Redis's `TIME` (issue 18, item 3): `ClockSkewed`,
    nothing stored, audited or published."""
    redis_now = FakeClock(clock.now_s - 8 * 3600)
    overrider, store, audit, broker = _overrider(clock, redis_now)
    with pytest.raises(ClockSkewed, match=r"\+28800\.0 s from Redis's"):
        overrider.override(
            APP, TokenKind.ACCESS_TOKEN, TOKEN, expires_in_s=600, reason=None, key_name="ci"
        )
    assert store.read(APP) is None
    assert broker.published == []
    assert audit.read(APP) == []


def test_override_within_a_few_seconds_of_redis_is_issued(clock: FakeClock) -> None:
    """Three seconds off is within `ISSUE_MAX_SKEW_S`: issued."""
    overrider, store, _, _ = _overrider(clock, FakeClock(clock.now_s - 3))
    update = overrider.override(
        APP, TokenKind.ACCESS_TOKEN, TOKEN, expires_in_s=600, reason=None, key_name="ci"
    )
    assert store.read(APP) == update


def test_the_override_route_answers_409_when_the_gateways_clock_is_off(
    tmp_path: Path, clock: FakeClock
) -> None:
    """Over HTTP: 409 naming the skew, nothing stored or published."""
    overrider, store, _, broker = _overrider(clock, FakeClock(clock.now_s - 8 * 3600))
    harness = Harness(tmp_path, clock, overrider=overrider)
    with harness.http:
        answer = harness.http.post(
            f"/v1/apps/{HARNESS_APP}/access_token",
            headers=harness.auth(),
            json={"access_token": TOKEN, "expires_in": 600},
        )
    assert answer.status_code == 409
    assert "+28800.0 s from Redis's" in answer.json()["reason"]
    assert store.read(HARNESS_APP) is None
    assert broker.published == []
