"""The leader acting on stored pushes, reconciling with WeChat's list, and the roster of
authorizers served: a real registry on SQLite, WeChat played by `responses`."""

from __future__ import annotations

import json

import pytest
import responses
from pydantic import SecretStr

from consumer_lib.wire.update import TokenSource, TokenUpdate
from producer.app_config import AppConfig, TokenApi
from producer.platform.config import PlatformConfig
from producer.platform.db.registry import PlatformRegistry
from producer.platform.processor import CallbackProcessor
from producer.platform.reconcile import reconcile
from producer.platform.roster import Roster
from producer.platform.tokens import PlatformTokens
from producer.refresh.sources import Components
from producer.upstream.openplatform import OpenPlatformClient
from tests.conftest import FakeClock

from .conftest import (
    AES_KEY,
    COMPONENT,
    COMPONENT_SECRET,
    PLATFORM_TOKEN,
    WECHAT,
    crypto,
    store_push,
)

CGI = f"{WECHAT}/cgi-bin/component"
CUSTOMER = "wxcustomer00000001"
COMPONENT_TOKEN = "C" * 40


class HeldComponent:
    """A component-token refresher as far as the processor looks: what it holds."""

    def __init__(self, clock: FakeClock, value: str | None) -> None:
        self.app = AppConfig(
            app_id=COMPONENT,
            secret=SecretStr(COMPONENT_SECRET),
            token_api=TokenApi.COMPONENT,
            component_appid=COMPONENT,
        )
        self.held = (
            None
            if value is None
            else TokenUpdate(
                app_id=COMPONENT,
                value=value,
                issued_at=clock(),
                expires_at=clock() + 7200,
                version=1,
                source=TokenSource.REFRESH,
                producer_id="prod-test",
            )
        )

    def refresh_refused(self, refused: str) -> str | None:
        return None


class Hooks:
    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []

    def ticket_arrived(self, component_appid: str) -> None:
        self.calls.append(("ticket", component_appid))

    def authorized(
        self, component_appid: str, authorizer_appid: str, reason: str, *, after_dead_grant: bool
    ) -> None:
        self.calls.append(("authorized", authorizer_appid, reason, str(after_dead_grant)))

    def unauthorized(self, component_appid: str, authorizer_appid: str) -> None:
        self.calls.append(("unauthorized", authorizer_appid))


def make(
    registry: PlatformRegistry, clock: FakeClock, *, component_token: str | None = COMPONENT_TOKEN
) -> tuple[CallbackProcessor, Hooks, PlatformTokens]:
    tokens = PlatformTokens(
        registry=registry, client=OpenPlatformClient(WECHAT), who="prod-test", clock=clock
    )
    components = Components()
    components.register(COMPONENT, HeldComponent(clock, component_token))
    hooks = Hooks()
    processor = CallbackProcessor(
        registry=registry,
        crypto={COMPONENT: crypto()},
        tokens=tokens,
        components=components,
        hooks=hooks,
        audit=None,
        who="prod-test",
        clock=clock,
    )
    return processor, hooks, tokens


def authorized_push(
    registry: PlatformRegistry, clock: FakeClock, info_type: str = "authorized"
) -> None:
    store_push(
        registry,
        {
            "InfoType": info_type,
            "CreateTime": str(int(clock())),
            "AuthorizerAppid": CUSTOMER,
            "AuthorizationCode": "queryauthcode@@@one",
            "AuthorizationCodeExpiredTime": str(int(clock()) + 3600),
        },
        now_s=clock(),
    )


def query_auth_answer(refresh_token: str = "refresh@@@one") -> dict[str, object]:
    return {
        "authorization_info": {
            "authorizer_appid": CUSTOMER,
            "authorizer_access_token": "A" * 40,
            "expires_in": 7200,
            "authorizer_refresh_token": refresh_token,
        }
    }


@responses.activate
def test_an_authorization_is_redeemed_stored_offered_and_marked(
    registry: PlatformRegistry, clock: FakeClock
) -> None:
    processor, hooks, tokens = make(registry, clock)
    authorized_push(registry, clock)
    responses.post(f"{CGI}/api_query_auth", json=query_auth_answer())
    assert processor.process_pending() == 1
    assert json.loads(responses.calls[0].request.body or b"{}") == {
        "component_appid": COMPONENT,
        "authorization_code": "queryauthcode@@@one",
    }
    assert registry.refresh_token(COMPONENT, CUSTOMER) == ("refresh@@@one", 1)
    assert hooks.calls == [("authorized", CUSTOMER, "authorized", "False")]
    assert not registry.unprocessed_callbacks()
    # The token redeemed with the code is what the authorizer's refresher publishes first.
    app = AppConfig(
        app_id=f"{COMPONENT}.{CUSTOMER}",
        secret=SecretStr(""),
        token_api=TokenApi.AUTHORIZER,
        component_appid=COMPONENT,
        authorizer_appid=CUSTOMER,
    )
    assert tokens.authorizer_token(app, COMPONENT_TOKEN).value == "A" * 40
    # Authorized again: a re-authorization, the new refresh token replacing the old.
    authorized_push(registry, clock, "updateauthorized")
    responses.post(f"{CGI}/api_query_auth", json=query_auth_answer("refresh@@@two"))
    processor.process_pending()
    assert hooks.calls[-1] == ("authorized", CUSTOMER, "re-authorized", "False")
    assert registry.refresh_token(COMPONENT, CUSTOMER) == ("refresh@@@two", 2)
    # Back after 61023: the old grant's snapshot must not stand in for the new token.
    registry.mark_needs_reauthorization(COMPONENT, CUSTOMER, "61023")
    authorized_push(registry, clock, "authorized")
    responses.post(f"{CGI}/api_query_auth", json=query_auth_answer("refresh@@@three"))
    processor.process_pending()
    assert hooks.calls[-1] == ("authorized", CUSTOMER, "authorized", "True")


@responses.activate
def test_without_a_component_token_the_push_waits_and_nothing_is_lost(
    registry: PlatformRegistry, clock: FakeClock
) -> None:
    processor, hooks, _ = make(registry, clock, component_token=None)
    authorized_push(registry, clock)
    assert processor.process_pending() == 0
    assert len(registry.unprocessed_callbacks()) == 1
    assert hooks.calls == []
    assert processor.stats.deferred == 1


@responses.activate
def test_a_transient_upstream_failure_leaves_the_push_for_the_next_round(
    registry: PlatformRegistry, clock: FakeClock
) -> None:
    processor, _, _ = make(registry, clock)
    authorized_push(registry, clock)
    responses.post(f"{CGI}/api_query_auth", json={"errcode": -1, "errmsg": "system busy"})
    assert processor.process_pending() == 0
    assert len(registry.unprocessed_callbacks()) == 1


@responses.activate
def test_an_expired_code_is_recorded_and_the_authorizer_listed_as_pending(
    registry: PlatformRegistry, clock: FakeClock
) -> None:
    processor, hooks, _ = make(registry, clock)
    authorized_push(registry, clock)
    responses.post(f"{CGI}/api_query_auth", json={"errcode": 61010, "errmsg": "code is expired"})
    assert processor.process_pending() == 1
    row = registry.authorizer(COMPONENT, CUSTOMER)
    assert row is not None
    assert row.state == "pending_code"
    assert hooks.calls == []


@responses.activate
def test_a_revocation_forgets_the_refresh_token_and_tells_the_fleet(
    registry: PlatformRegistry, clock: FakeClock
) -> None:
    processor, hooks, _ = make(registry, clock)
    registry.authorize(COMPONENT, CUSTOMER, "refresh@@@one")
    store_push(
        registry,
        {"InfoType": "unauthorized", "CreateTime": str(int(clock())), "AuthorizerAppid": CUSTOMER},
        now_s=clock(),
    )
    store_push(
        registry,
        {
            "InfoType": "component_verify_ticket",
            "CreateTime": str(int(clock()) + 1),
            "ComponentVerifyTicket": "t@@@1",
        },
        now_s=clock(),
    )
    assert processor.process_pending() == 2
    row = registry.authorizer(COMPONENT, CUSTOMER)
    assert row is not None
    assert (row.state, row.has_refresh_token) == ("unauthorized", False)
    assert hooks.calls == [("unauthorized", CUSTOMER), ("ticket", COMPONENT)]
    assert len(responses.calls) == 0


def test_an_unreadable_stored_push_is_marked_rejected(
    registry: PlatformRegistry, clock: FakeClock
) -> None:
    processor, hooks, _ = make(registry, clock)
    store_push(
        registry,
        {"InfoType": "authorized", "CreateTime": "1", "AuthorizerAppid": CUSTOMER},
        now_s=clock(),
    )  # no code: parse_event refuses it
    assert processor.process_pending() == 1
    assert hooks.calls == []
    assert processor.stats.processed == {"rejected": 1}


@responses.activate
def test_reconciliation_recovers_what_wechat_still_has_and_lists_the_rest(
    registry: PlatformRegistry,
) -> None:
    registry.authorize(COMPONENT, "wxcustomer00000001", "refresh@@@kept")
    registry.authorize(COMPONENT, "wxcustomer00000009", "refresh@@@gone")
    responses.post(
        f"{CGI}/api_get_authorizer_list",
        json={
            "total_count": 3,
            "list": [
                {
                    "authorizer_appid": "wxcustomer00000001",
                    "refresh_token": "refresh@@@kept",
                    "auth_time": 1,
                },
                {
                    "authorizer_appid": "wxcustomer00000002",
                    "refresh_token": "refresh@@@lost",
                    "auth_time": 2,
                },
                {"authorizer_appid": "wxcustomer00000003", "refresh_token": "", "auth_time": 3},
            ],
        },
    )
    done = reconcile(registry, OpenPlatformClient(WECHAT), COMPONENT, COMPONENT_TOKEN)
    assert (done.listed, done.already) == (3, 1)
    assert done.recovered == ["wxcustomer00000002"]
    assert done.unrecoverable == ["wxcustomer00000003"]
    assert done.not_listed == ["wxcustomer00000009"]
    assert registry.refresh_token(COMPONENT, "wxcustomer00000002") == ("refresh@@@lost", 1)


def test_the_roster_serves_what_is_authorized(registry: PlatformRegistry) -> None:
    platform = PlatformConfig(
        component_appid=COMPONENT,
        token=SecretStr(PLATFORM_TOKEN),
        encoding_aes_key=SecretStr(AES_KEY),
        secret=SecretStr(COMPONENT_SECRET),
    )
    roster = Roster(registry, [platform])
    assert roster.read() is False
    assert [app.app_id for app in roster.apps()] == [COMPONENT]
    for n in range(1, 1_502):
        registry.authorize(COMPONENT, f"wxcustomer{n:08d}", "refresh@@@x")
    registry.unauthorize(COMPONENT, "wxcustomer00000007")
    assert roster.read() is True
    apps = roster.apps()
    assert len(apps) == 1 + 1_500  # pages of 1,000 read to the end; the revoked one left out
    first = apps[1]
    assert (first.component_appid, first.authorizer_appid) == (COMPONENT, "wxcustomer00000001")
    assert roster.read() is False
    assert roster.apps()[1] is first  # unchanged: the same configs, no fleet change
    assert roster.drop(COMPONENT, "wxcustomer00000001") is True
    assert roster.add(COMPONENT, "wxcustomer00000001") is True
    with pytest.raises(ValueError, match="component secret"):
        Roster(registry, [platform.model_copy(update={"secret": None})])
