"""The platform's credentials on a fake clock: the component token from the stored verify
ticket, each authorizer's token with its refresh token from the registry (a real registry on
SQLite), WeChat's component API played by `responses`."""

from __future__ import annotations

import json

import fakeredis
import pytest
import responses
from pydantic import SecretStr

from consumer_lib.wire.update import TokenUpdate
from producer.app_config import AppConfig, TokenApi
from producer.platform.db.registry import PlatformRegistry
from producer.platform.tokens import PUSH_RESTART_MIN_S, PlatformTokens
from producer.refresh.refresher import RefreshTiming
from producer.refresh.sources import NO_COMPONENT_TOKEN_RETRY_S, AuthorizerSource, Components
from producer.store.tokens import TokenStore
from producer.upstream.errcodes import FailureKind
from producer.upstream.errors import UpstreamError
from producer.upstream.openplatform import OpenPlatformClient
from tests.conftest import FakeClock
from tests.unit.producer.builders import build_refresher

from .conftest import COMPONENT, COMPONENT_SECRET, WECHAT

AUTHORIZER = "wxcustomer00000001"
COMPONENT_APP = AppConfig(
    app_id=COMPONENT,
    secret=SecretStr(COMPONENT_SECRET),
    token_api=TokenApi.COMPONENT,
    component_appid=COMPONENT,
)
AUTHORIZER_APP = AppConfig(
    app_id=f"{COMPONENT}.{AUTHORIZER}",
    secret=SecretStr(""),
    token_api=TokenApi.AUTHORIZER,
    component_appid=COMPONENT,
    authorizer_appid=AUTHORIZER,
)
CGI = f"{WECHAT}/cgi-bin/component"


def ok(**fields: object) -> dict[str, object]:
    return {"errcode": 0, **fields}


class Lost:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []

    def __call__(self, component: str, authorizer: str, why: str) -> None:
        self.calls.append((component, authorizer, why))


@pytest.fixture
def lost() -> Lost:
    return Lost()


@pytest.fixture
def tokens(registry: PlatformRegistry, clock: FakeClock, lost: Lost) -> PlatformTokens:
    return PlatformTokens(
        registry=registry,
        client=OpenPlatformClient(WECHAT),
        who="prod-test",
        on_lost=lost,
        clock=clock,
    )


def _bodies(path: str) -> list[dict[str, object]]:
    return [
        json.loads(call.request.body or b"{}")
        for call in responses.calls
        if path in str(call.request.url)
    ]


@responses.activate
def test_the_component_token_is_bought_with_the_stored_ticket(
    registry: PlatformRegistry, tokens: PlatformTokens
) -> None:
    registry.save_verify_ticket(COMPONENT, "ticket@@@one", 1_700_000_000)
    responses.post(
        f"{CGI}/api_component_token", json=ok(component_access_token="C" * 40, expires_in=7200)
    )
    fetched = tokens.fetch(COMPONENT_APP)
    assert fetched.value == "C" * 40
    assert _bodies("api_component_token") == [
        {
            "component_appid": COMPONENT,
            "component_appsecret": COMPONENT_SECRET,
            "component_verify_ticket": "ticket@@@one",
        }
    ]


@responses.activate
def test_no_ticket_or_a_refused_one_restarts_the_pushes_at_most_every_ten_minutes(
    registry: PlatformRegistry, tokens: PlatformTokens, clock: FakeClock
) -> None:
    responses.post(f"{CGI}/api_start_push_ticket", json=ok())
    with pytest.raises(UpstreamError, match="no component_verify_ticket stored yet"):
        tokens.fetch(COMPONENT_APP)
    registry.save_verify_ticket(COMPONENT, "ticket@@@stale", 1_700_000_000)
    responses.post(
        f"{CGI}/api_component_token", json={"errcode": 61005, "errmsg": "ticket expired"}
    )
    with pytest.raises(UpstreamError) as refused:
        tokens.fetch(COMPONENT_APP)
    assert refused.value.errcode == 61005
    assert refused.value.kind is FailureKind.CONFIG
    assert len(_bodies("api_start_push_ticket")) == 1  # the second within ten minutes: not asked
    clock.advance(PUSH_RESTART_MIN_S)
    with pytest.raises(UpstreamError):
        tokens.fetch(COMPONENT_APP)
    assert (
        _bodies("api_start_push_ticket")
        == [{"component_appid": COMPONENT, "component_secret": COMPONENT_SECRET}] * 2
    )
    assert tokens.ticket_failures[COMPONENT] == 3
    assert tokens.push_restarts[COMPONENT] == 2


@responses.activate
def test_a_returned_refresh_token_is_stored_before_the_token_is_handed_out(
    registry: PlatformRegistry, tokens: PlatformTokens
) -> None:
    registry.authorize(COMPONENT, AUTHORIZER, "refresh@@@one")
    responses.post(
        f"{CGI}/api_authorizer_token",
        json=ok(
            authorizer_access_token="A" * 40,
            expires_in=7200,
            authorizer_refresh_token="refresh@@@two",
        ),
    )
    fetched = tokens.authorizer_token(AUTHORIZER_APP, "C" * 40)
    assert fetched.value == "A" * 40
    assert registry.refresh_token(COMPONENT, AUTHORIZER) == ("refresh@@@two", 2)
    assert _bodies("api_authorizer_token")[0]["authorizer_refresh_token"] == "refresh@@@one"
    assert "component_access_token=" + "C" * 40 in str(responses.calls[0].request.url)


@responses.activate
def test_a_refresh_token_replaced_meanwhile_is_not_overwritten_and_the_token_not_used(
    registry: PlatformRegistry, tokens: PlatformTokens
) -> None:
    registry.authorize(COMPONENT, AUTHORIZER, "refresh@@@one")

    def reauthorized_meanwhile(request: object) -> tuple[int, dict[str, str], str]:
        registry.authorize(COMPONENT, AUTHORIZER, "refresh@@@customer-again")
        body = ok(
            authorizer_access_token="A" * 40,
            expires_in=7200,
            authorizer_refresh_token="refresh@@@rotated",
        )
        return 200, {}, json.dumps(body)

    responses.add_callback(
        responses.POST, f"{CGI}/api_authorizer_token", callback=reauthorized_meanwhile
    )
    with pytest.raises(UpstreamError, match="changed in the registry meanwhile") as raised:
        tokens.authorizer_token(AUTHORIZER_APP, "C" * 40)
    assert raised.value.kind is FailureKind.TRANSIENT
    assert registry.refresh_token(COMPONENT, AUTHORIZER) == ("refresh@@@customer-again", 2)


@responses.activate
def test_61023_marks_the_authorizer_once_and_takes_it_out(
    registry: PlatformRegistry, tokens: PlatformTokens, lost: Lost
) -> None:
    registry.authorize(COMPONENT, AUTHORIZER, "refresh@@@dead")
    responses.post(
        f"{CGI}/api_authorizer_token", json={"errcode": 61023, "errmsg": "refresh_token is invalid"}
    )
    with pytest.raises(UpstreamError) as raised:
        tokens.authorizer_token(AUTHORIZER_APP, "C" * 40)
    assert raised.value.kind is FailureKind.CONFIG
    row = registry.authorizer(COMPONENT, AUTHORIZER)
    assert row is not None
    assert row.state == "needs_reauthorization"
    assert "61023" in (row.reason or "")
    assert lost.calls == [(COMPONENT, AUTHORIZER, "needs re-authorization (61023)")]
    # Asked again (before the fleet dropped it): no upstream call, nothing marked twice.
    with pytest.raises(UpstreamError, match="not authorized in the registry"):
        tokens.authorizer_token(AUTHORIZER_APP, "C" * 40)
    assert len(responses.calls) == 1


@responses.activate
def test_an_offered_token_is_handed_out_without_a_call(
    registry: PlatformRegistry, tokens: PlatformTokens, clock: FakeClock
) -> None:
    from producer.upstream.errors import FetchedToken

    tokens.offer(AUTHORIZER_APP.app_id, FetchedToken("O" * 40, 7200))
    clock.advance(100)
    fetched = tokens.authorizer_token(AUTHORIZER_APP, "C" * 40)
    assert (fetched.value, fetched.expires_in_s) == ("O" * 40, 7100)
    assert len(responses.calls) == 0


class ComponentUpstream:
    """Component tokens counted; the first may be declared dead."""

    def __init__(self) -> None:
        self.calls = 0

    def fetch(self, app: AppConfig, *, force_refresh: bool = False) -> object:
        from producer.upstream.errors import FetchedToken

        self.calls += 1
        return FetchedToken(f"COMPONENT-{self.calls}-" + "c" * 30, 7200)


class AuthorizerUpstream:
    def __init__(self, dead: set[str]) -> None:
        self.dead = dead
        self.used: list[str] = []

    def authorizer_token(self, app: AppConfig, component_token: str) -> object:
        from producer.upstream.errors import FetchedToken

        self.used.append(component_token)
        if component_token in self.dead:
            raise UpstreamError("40001", kind=FailureKind.TOKEN_INVALID, errcode=40001)
        return FetchedToken(f"AUTHORIZER-{len(self.used)}-" + "a" * 30, 7200)


def test_an_authorizer_waits_for_its_component_token_then_refreshes_a_dead_one(
    clock: FakeClock,
) -> None:
    store = TokenStore(fakeredis.FakeRedis())
    published: list[TokenUpdate] = []
    common = {
        "store": store,
        "publish": published.append,
        "timing": RefreshTiming(),
        "clock": clock,
        "rand": lambda: 0.5,
    }
    components = Components()
    component_upstream = ComponentUpstream()
    component = build_refresher(COMPONENT_APP, fetcher=component_upstream, **common)  # type: ignore[arg-type]
    components.register(COMPONENT, component)
    upstream = AuthorizerUpstream(dead=set())
    authorizer = build_refresher(
        AUTHORIZER_APP,
        source=AuthorizerSource(components, upstream, clock),  # type: ignore[arg-type]
        **common,  # type: ignore[arg-type]
    )
    # No component token yet: nothing spent, back in a while (and woken when it arrives).
    assert authorizer.step() == pytest.approx(NO_COMPONENT_TOKEN_RETRY_S)
    assert upstream.used == []
    component.step()
    authorizer.dependency_arrived()
    authorizer.step()
    held = component.held
    assert held is not None
    assert upstream.used == [held.value]
    assert [u.app_id for u in published] == [COMPONENT, AUTHORIZER_APP.app_id]
    # Another environment minted a component token: ours is refused; refreshed once, retried.
    upstream.dead.add(held.value)
    authorizer.replace_now("test: a new token wanted")
    authorizer.step()
    new_component = component.held
    assert new_component is not None
    assert new_component.value != held.value
    assert upstream.used[-2:] == [held.value, new_component.value]
    assert component_upstream.calls == 2
    assert published[-1].app_id == AUTHORIZER_APP.app_id
    assert published[-1].value == "AUTHORIZER-3-" + "a" * 30


@responses.activate
def test_with_the_registry_away_the_remembered_refresh_token_keeps_tokens_flowing(
    registry: PlatformRegistry, tokens: PlatformTokens, monkeypatch: pytest.MonkeyPatch
) -> None:
    from producer.platform.errors import RegistryUnavailable

    registry.authorize(COMPONENT, AUTHORIZER, "refresh@@@one")
    answer = ok(authorizer_access_token="A" * 40, expires_in=7200)
    responses.post(f"{CGI}/api_authorizer_token", json=answer)
    tokens.authorizer_token(AUTHORIZER_APP, "C" * 40)  # read from the registry, remembered

    def away(*args: object, **kwargs: object) -> None:
        raise RegistryUnavailable("reading a refresh token: OperationalError: server closed")

    monkeypatch.setattr(registry, "refresh_token", away)
    assert tokens.authorizer_token(AUTHORIZER_APP, "C" * 40).value == "A" * 40
    assert tokens.remembered_uses == 1
    assert _bodies("api_authorizer_token")[-1]["authorizer_refresh_token"] == "refresh@@@one"
    # A refresh token WeChat returns now cannot be stored: its access token is not used.
    rotated = ok(authorizer_access_token="B" * 40, expires_in=7200, authorizer_refresh_token="r2")
    responses.post(f"{CGI}/api_authorizer_token", json=rotated)
    monkeypatch.setattr(registry, "replace_refresh_token", away)
    with pytest.raises(UpstreamError, match="cannot store it"):
        tokens.authorizer_token(AUTHORIZER_APP, "C" * 40)
    # Never read before and the registry away: nothing to refresh with, a transient failure.
    other = AUTHORIZER_APP.model_copy(
        update={
            "app_id": f"{COMPONENT}.wxcustomer00000002",
            "authorizer_appid": "wxcustomer00000002",
        }
    )
    with pytest.raises(UpstreamError, match="reading its refresh token") as raised:
        tokens.authorizer_token(other, "C" * 40)
    assert raised.value.kind is FailureKind.TRANSIENT


@responses.activate
def test_with_the_registry_away_the_ticket_last_read_buys_the_component_token(
    registry: PlatformRegistry, tokens: PlatformTokens, monkeypatch: pytest.MonkeyPatch
) -> None:
    from producer.platform.errors import RegistryUnavailable

    registry.save_verify_ticket(COMPONENT, "ticket@@@one", 1_700_000_000)
    answer = ok(component_access_token="C" * 40, expires_in=7200)
    responses.post(f"{CGI}/api_component_token", json=answer)
    tokens.fetch(COMPONENT_APP)

    def away(*args: object, **kwargs: object) -> None:
        raise RegistryUnavailable("reading the verify ticket: OperationalError: gone")

    monkeypatch.setattr(registry, "verify_ticket", away)
    assert tokens.fetch(COMPONENT_APP).value == "C" * 40
    assert _bodies("api_component_token")[-1]["component_verify_ticket"] == "ticket@@@one"


@responses.activate
def test_primed_refresh_tokens_carry_an_authorizer_never_refreshed_here(
    registry: PlatformRegistry, tokens: PlatformTokens, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At start the producer remembers every refresh token: one whose first refresh here
    meets a database outage still refreshes."""
    from producer.platform.errors import RegistryUnavailable

    registry.authorize(COMPONENT, AUTHORIZER, "refresh@@@one")
    registry.authorize(COMPONENT, "wxcustomer00000002", "refresh@@@two")
    registry.unauthorize(COMPONENT, "wxcustomer00000002")
    assert tokens.prime(COMPONENT) == 1  # the revoked one has none

    def away(*args: object, **kwargs: object) -> None:
        raise RegistryUnavailable("reading a refresh token: OperationalError: gone")

    monkeypatch.setattr(registry, "refresh_token", away)
    responses.post(
        f"{CGI}/api_authorizer_token", json=ok(authorizer_access_token="A" * 40, expires_in=7200)
    )
    assert tokens.authorizer_token(AUTHORIZER_APP, "C" * 40).value == "A" * 40
    assert _bodies("api_authorizer_token")[-1]["authorizer_refresh_token"] == "refresh@@@one"
