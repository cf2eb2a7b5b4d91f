"""What the platform keeper tells operators from the registry: each platform's overview (for
metrics) and a verify ticket getting old, logged once per threshold crossed."""

from __future__ import annotations

import logging
import threading

import fakeredis
import pytest
from pydantic import SecretStr

from consumer_lib.wire.keys import KeyLayout
from producer.platform.config import PlatformConfig
from producer.platform.db.registry import PlatformRegistry
from producer.platform.keeper import FleetAccess, PlatformKeeper
from producer.platform.roster import Roster
from producer.platform.tokens import PlatformTokens
from producer.refresh.sources import Components
from producer.upstream.openplatform import OpenPlatformClient
from tests.conftest import FakeClock

from .conftest import AES_KEY, COMPONENT, COMPONENT_SECRET, PLATFORM_TOKEN, WECHAT


@pytest.fixture
def keeper(registry: PlatformRegistry, clock: FakeClock) -> PlatformKeeper:
    platform = PlatformConfig(
        component_appid=COMPONENT,
        token=SecretStr(PLATFORM_TOKEN),
        encoding_aes_key=SecretStr(AES_KEY),
        secret=SecretStr(COMPONENT_SECRET),
    )
    tokens = PlatformTokens(
        registry=registry, client=OpenPlatformClient(WECHAT), who="prod-test", clock=clock
    )
    return PlatformKeeper(
        registry=registry,
        roster=Roster(registry, [platform]),
        tokens=tokens,
        components=Components(),
        fleet=FleetAccess(
            apply_roster=lambda: None,
            refresher=lambda app_id, kind: None,
            wake=lambda refresher: None,
            forget=lambda app_id: None,
            is_leader=lambda: False,
        ),
        redis_client=fakeredis.FakeRedis(),
        keys=KeyLayout("keeper-test"),
        audit=None,
        who="prod-test",
        stop=threading.Event(),
        clock=clock,
    )


def test_an_aging_ticket_is_logged_once_per_threshold(
    keeper: PlatformKeeper,
    registry: PlatformRegistry,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="producer.platform.keeper")
    keeper.survey()
    assert [r.levelname for r in caplog.records] == ["ERROR"]  # none stored
    assert "no component_verify_ticket stored" in caplog.records[0].getMessage()
    registry.save_verify_ticket(COMPONENT, "ticket@@@1", int(clock()))
    registry.authorize(COMPONENT, "wxcustomer00000001", "refresh@@@1")
    caplog.clear()
    keeper.survey()
    keeper.survey()
    assert [r.levelname for r in caplog.records] == ["INFO"]
    seen = keeper.overview[COMPONENT]
    assert seen.ticket_received_at_s == clock()
    assert seen.authorizers["authorized"] == 1
    assert seen.pushes_waiting == 0
    caplog.clear()
    clock.advance(2 * 3600)
    keeper.survey()
    clock.advance(600)
    keeper.survey()
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert "2.0 h old" in caplog.records[0].getMessage()
    caplog.clear()
    clock.advance(11 * 3600)
    keeper.survey()
    keeper.survey()
    assert [r.levelname for r in caplog.records] == ["ERROR"]


def test_the_leader_prunes_processed_pushes_after_30_days(
    keeper: PlatformKeeper, registry: PlatformRegistry, clock: FakeClock
) -> None:
    from .conftest import store_push

    def ticket_push(n: int) -> None:
        fields = {"InfoType": "component_verify_ticket", "ComponentVerifyTicket": f"t@@@{n}"}
        store_push(registry, {**fields, "CreateTime": str(n)}, now_s=clock())

    ticket_push(1)
    keeper.leader_round()  # acted on, kept
    assert not registry.unprocessed_callbacks()
    clock.advance(31 * 86_400)
    ticket_push(2)
    keeper.leader_round()  # the new one acted on; the 31-day-old one deleted
    assert registry.prune_callbacks(clock() - 30 * 86_400 + 1) == 0
    assert registry.prune_callbacks(clock() + 1) == 1  # the new one was still there
