"""Plain apps kept in the registry: stored with their secrets sealed, read back as the apps
file would give them, removed; a row that does not make an app is reported, never served."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from pydantic import SecretStr

from consumer_lib.wire.kinds import Platform, TokenKind
from producer.app_config import AppConfig, TokenApi
from producer.platform.db.registry import PlatformRegistry
from producer.platform.db.schema import stored_apps
from producer.platform.roster import Roster

OA = AppConfig(
    app_id="wxstoredapp000001",
    secret=SecretStr("s" * 32),
    token_api=TokenApi.CLASSIC,
    tickets=(TokenKind.JSAPI_TICKET,),
)
AGENT = AppConfig(
    app_id="wwstoredagent01",
    secret=SecretStr("w" * 32),
    platform=Platform.WECOM,
    token_api=TokenApi.WECOM,
    corp_id="wwcorp",
    agent_id="1000002",
)


def test_apps_are_stored_read_back_replaced_and_removed(registry: PlatformRegistry) -> None:
    assert registry.put_apps([OA, AGENT]) == 2
    assert registry.stored_apps() == ([AGENT, OA], [])
    changed = OA.model_copy(update={"secret": SecretStr("t" * 32)})
    registry.put_apps([changed])
    stored, _ = registry.stored_apps()
    assert stored[1].secret.get_secret_value() == "t" * 32
    assert registry.remove_app(OA.app_id) is True
    assert registry.remove_app(OA.app_id) is False
    assert registry.stored_apps() == ([AGENT], [])


def test_the_secret_is_sealed_at_rest(registry: PlatformRegistry, engine: sa.Engine) -> None:
    registry.put_apps([OA])
    with engine.connect() as connection:
        row = connection.execute(sa.select(stored_apps)).one()
    assert b"s" * 32 not in row.secret_sealed
    assert "s" * 32 not in row.config_json


def test_a_row_that_does_not_make_an_app_is_reported_not_served(
    registry: PlatformRegistry, engine: sa.Engine
) -> None:
    registry.put_apps([OA, AGENT])
    with engine.begin() as connection:  # a row corrupted on purpose
        connection.execute(
            stored_apps.update()
            .where(stored_apps.c.app_id == AGENT.app_id)
            .values(config_json='{"platform": "wecom"}')
        )
    stored, broken = registry.stored_apps()
    assert stored == [OA]
    assert len(broken) == 1
    assert broken[0].startswith(f"{AGENT.app_id}: ")
    assert "w" * 32 not in broken[0]


def test_a_platform_credential_is_not_a_stored_app(registry: PlatformRegistry) -> None:
    component = AppConfig(
        app_id="wxcomponent0000001",
        secret=SecretStr("c" * 32),
        token_api=TokenApi.COMPONENT,
        component_appid="wxcomponent0000001",
    )
    with pytest.raises(ValueError, match="not stored apps"):
        registry.put_apps([component])


def test_the_roster_serves_the_stored_apps(registry: PlatformRegistry) -> None:
    roster = Roster(registry, [])
    assert roster.read() is False
    registry.put_apps([OA])
    assert roster.read() is True
    assert roster.stored_apps() == [OA]
    assert roster.read() is False
    registry.remove_app(OA.app_id)
    assert roster.read() is True
    assert roster.stored_apps() == []


def test_an_authorizer_added_during_a_read_is_not_dropped_by_it(
    registry: PlatformRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The leader adds an authorizer while the roster thread's read (begun before the
    authorization was committed) is under way: the read keeps it."""
    from producer.platform.config import PlatformConfig

    platform = PlatformConfig(
        component_appid="wxcomponent0000001",
        token=SecretStr("pamtest"),
        encoding_aes_key=SecretStr("a" * 43),
        secret=SecretStr("component-secret"),
    )
    roster = Roster(registry, [platform])
    real = registry.authorizers

    def slow_page(*args: object, **kwargs: object) -> object:
        page = real(*args, **kwargs)  # type: ignore[arg-type]
        roster.add("wxcomponent0000001", "wxcustomer00000001")  # meanwhile, the leader
        return page

    monkeypatch.setattr(registry, "authorizers", slow_page)
    roster.read()
    assert [a.authorizer_appid for a in roster.apps()[1:]] == ["wxcustomer00000001"]
