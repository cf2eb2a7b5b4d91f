"""The sandbox plays the open platform: the component API's semantics (tickets, component
token, code redemption, refresh tokens, the authorizer list), customers authorizing,
re-authorizing and revoking, and the injected 61005/61006/61023."""

from __future__ import annotations

import json

import pytest
import requests

from ops.sandbox import (
    Fault,
    SandboxConfig,
    SandboxPlatform,
    SandboxServer,
    SandboxState,
    parse_platforms,
)

COMPONENT = "wxcomponent0000001"
SECRET = "component-secret"
TOKEN = "pamtest"
KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
T0 = 1_700_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def platform(url: str | None = None) -> SandboxPlatform:
    return SandboxPlatform(COMPONENT, SECRET, TOKEN, KEY, callback_url=url)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def state(clock: Clock) -> SandboxState:
    config = SandboxConfig(apps={}, expires_in_s=7200, overlap_s=300, platforms=[platform()])
    return SandboxState(config, clock)


def component_token(state: SandboxState, ticket: str | None) -> dict[str, object]:
    body = {
        "component_appid": COMPONENT,
        "component_appsecret": SECRET,
        "component_verify_ticket": ticket,
    }
    return state.component_token(json.dumps(body))


def live_component_token(state: SandboxState) -> str:
    ticket = state.next_ticket(COMPONENT)
    answer = component_token(state, ticket)
    token = answer["component_access_token"]
    assert isinstance(token, str), answer
    return token


def call(state: SandboxState, endpoint: str, token: str, **body: object) -> dict[str, object]:
    return state.component_call(endpoint, token, json.dumps({"component_appid": COMPONENT, **body}))


def redeem(state: SandboxState, token: str, authorizer: str) -> dict[str, object]:
    fields = state.authorize(COMPONENT, authorizer)
    answer = call(state, "query_auth", token, authorization_code=fields["AuthorizationCode"])
    info = answer["authorization_info"]
    assert isinstance(info, dict), answer
    return info


def test_component_token_needs_the_latest_pushed_ticket(state: SandboxState, clock: Clock) -> None:
    """No ticket pushed yet: 61005; a made-up or superseded ticket: 61006; the latest: a token
    for expires_in; once the latest is 12 h old: 61005."""
    assert component_token(state, "ticket@@@x")["errcode"] == 61005
    first = state.next_ticket(COMPONENT)
    second = state.next_ticket(COMPONENT)
    assert component_token(state, "ticket@@@x")["errcode"] == 61006
    assert component_token(state, first)["errcode"] == 61006
    answer = component_token(state, second)
    assert answer["expires_in"] == 7200
    assert isinstance(answer["component_access_token"], str)
    clock.now += 12 * 3600
    assert component_token(state, second)["errcode"] == 61005


def test_component_token_checks_appid_and_secret(state: SandboxState) -> None:
    """Unknown component: 61011; wrong secret: 40125; not a JSON object: 47001."""
    ticket = state.next_ticket(COMPONENT)
    body = {
        "component_appid": "wxnope",
        "component_appsecret": SECRET,
        "component_verify_ticket": ticket,
    }
    assert state.component_token(json.dumps(body))["errcode"] == 61011
    body = {**body, "component_appid": COMPONENT, "component_appsecret": "wrong"}
    assert state.component_token(json.dumps(body))["errcode"] == 40125
    assert state.component_token(b"[1]")["errcode"] == 47001


def test_a_new_component_token_retires_the_old_after_the_overlap(
    state: SandboxState, clock: Clock
) -> None:
    """The old component token works for overlap_s after a new one, then 40001."""
    old = live_component_token(state)
    new = live_component_token(state)
    assert "total_count" in call(state, "authorizer_list", old, offset=0, count=10)
    clock.now += 301
    assert call(state, "authorizer_list", old, offset=0, count=10)["errcode"] == 40001
    assert "total_count" in call(state, "authorizer_list", new, offset=0, count=10)


def test_query_auth_redeems_a_code_until_it_expires(state: SandboxState, clock: Clock) -> None:
    """A code gives the authorizer's token and refresh token; after an hour: 61010; an
    unknown code: 61009; without a component token: 41001."""
    token = live_component_token(state)
    fields = state.authorize(COMPONENT, "wxauthorizer000001")
    assert fields["InfoType"] == "authorized"
    assert int(str(fields["AuthorizationCodeExpiredTime"])) == int(T0) + 3600
    answer = call(state, "query_auth", token, authorization_code=fields["AuthorizationCode"])
    info = answer["authorization_info"]
    assert isinstance(info, dict)
    assert info["authorizer_appid"] == "wxauthorizer000001"
    assert str(info["authorizer_refresh_token"]).startswith("refreshtoken@@@")
    assert info["expires_in"] == 7200
    assert call(state, "query_auth", token, authorization_code="nope")["errcode"] == 61009
    assert (
        state.component_call("query_auth", None, json.dumps({"component_appid": COMPONENT}))[
            "errcode"
        ]
        == 41001
    )
    later = state.authorize(COMPONENT, "wxauthorizer000002")
    clock.now += 3600
    token = live_component_token(state)
    assert (
        call(state, "query_auth", token, authorization_code=later["AuthorizationCode"])["errcode"]
        == 61010
    )


def test_authorizer_token_with_the_refresh_token(state: SandboxState) -> None:
    """The refresh token gives a new authorizer token and itself again; any other: 61023."""
    token = live_component_token(state)
    info = redeem(state, token, "wxauthorizer000001")
    refresh = info["authorizer_refresh_token"]
    answer = call(
        state,
        "authorizer_token",
        token,
        authorizer_appid="wxauthorizer000001",
        authorizer_refresh_token=refresh,
    )
    assert answer["authorizer_refresh_token"] == refresh
    assert answer["authorizer_access_token"] != info["authorizer_access_token"]
    for bad in ("refreshtoken@@@nope", None, ""):
        answer = call(
            state,
            "authorizer_token",
            token,
            authorizer_appid="wxauthorizer000001",
            authorizer_refresh_token=bad,
        )
        assert answer["errcode"] == 61023


def test_reauthorization_replaces_the_refresh_token(state: SandboxState) -> None:
    """updateauthorized: the old refresh token gets 61023, the new code's works."""
    token = live_component_token(state)
    old = redeem(state, token, "wxauthorizer000001")["authorizer_refresh_token"]
    fields = state.authorize(COMPONENT, "wxauthorizer000001")
    assert fields["InfoType"] == "updateauthorized"
    body = {"authorizer_appid": "wxauthorizer000001", "authorizer_refresh_token": old}
    assert call(state, "authorizer_token", token, **body)["errcode"] == 61023
    answer = call(state, "query_auth", token, authorization_code=fields["AuthorizationCode"])
    info = answer["authorization_info"]
    assert isinstance(info, dict)
    assert info["authorizer_refresh_token"] != old


def test_revocation_kills_refresh_token_and_token(state: SandboxState) -> None:
    """unauthorized: 61023 for the refresh token, the token is dead, the list drops it; a
    second revocation has nothing to revoke."""
    token = live_component_token(state)
    info = redeem(state, token, "wxauthorizer000001")
    assert state.revoke(COMPONENT, "wxauthorizer000001") == {
        "InfoType": "unauthorized",
        "AuthorizerAppid": "wxauthorizer000001",
    }
    body = {
        "authorizer_appid": "wxauthorizer000001",
        "authorizer_refresh_token": info["authorizer_refresh_token"],
    }
    assert call(state, "authorizer_token", token, **body)["errcode"] == 61023
    assert not state.is_valid(str(info["authorizer_access_token"]))
    assert call(state, "authorizer_list", token, offset=0, count=10)["total_count"] == 0
    assert state.revoke(COMPONENT, "wxauthorizer000001") is None


def test_authorizer_list_pages_and_limits(state: SandboxState) -> None:
    """Pages of at most 500; refresh_token empty until the code is redeemed; count > 500 or
    a bad offset is refused."""
    token = live_component_token(state)
    for i in range(3):
        state.authorize(COMPONENT, f"wxauthorizer00000{i}")
    redeemed = redeem(state, token, "wxauthorizer000009")
    answer = call(state, "authorizer_list", token, offset=0, count=2)
    assert answer["total_count"] == 4
    assert isinstance(answer["list"], list)
    assert [a["refresh_token"] for a in answer["list"]] == ["", ""]
    last = call(state, "authorizer_list", token, offset=2, count=500)
    assert isinstance(last["list"], list)
    assert last["list"][-1]["refresh_token"] == redeemed["authorizer_refresh_token"]
    assert call(state, "authorizer_list", token, offset=0, count=501)["errcode"] == 61003
    assert call(state, "authorizer_list", token, offset=-1, count=5)["errcode"] == 47001


def test_stop_pushes_and_start_push_ticket(state: SandboxState) -> None:
    """Stopped pushes carry no ticket; api_start_push_ticket (with the secret) resumes them."""
    assert state.stop_pushes(COMPONENT)
    assert state.next_ticket(COMPONENT) is None
    body = {"component_appid": COMPONENT, "component_secret": "wrong"}
    assert state.start_push_ticket(json.dumps(body))["errcode"] == 40125
    body["component_secret"] = SECRET
    assert state.start_push_ticket(json.dumps(body))["errcode"] == 0
    assert state.next_ticket(COMPONENT) is not None


@pytest.mark.parametrize(
    ("mode", "endpoint", "code"),
    [
        ("ticket_expired", "component_token", 61005),
        ("ticket_invalid", "component_token", 61006),
        ("refresh_token_invalid", "authorizer_token", 61023),
    ],
)
def test_injected_errors_over_http(mode: str, endpoint: str, code: int) -> None:
    """A fault on a component endpoint answers WeChat's errcode, for the named platform."""
    config = SandboxConfig(apps={}, platforms=[platform()])
    with SandboxServer(config) as sandbox:
        fault = {"mode": mode, "count": 1, "endpoints": [endpoint], "apps": [COMPONENT]}
        assert requests.post(f"{sandbox.base_url}/sandbox/fault", json=fault, timeout=5).ok
        path = {
            "component_token": "api_component_token",
            "authorizer_token": "api_authorizer_token",
        }[endpoint]
        answer = requests.post(
            f"{sandbox.base_url}/cgi-bin/component/{path}?component_access_token=x",
            json={"component_appid": COMPONENT},
            timeout=5,
        ).json()
        assert answer["errcode"] == code
        assert sandbox.state.stats()["fault"] is None  # count 1: used up


def test_controls_over_http_without_a_callback_url() -> None:
    """Controls answer for a known platform (nothing pushed without a URL) and refuse others."""
    config = SandboxConfig(apps={}, platforms=[platform()])
    with SandboxServer(config) as sandbox:
        base = f"{sandbox.base_url}/sandbox/platform"
        body = {"component_appid": COMPONENT, "authorizer_appid": "wxauthorizer000001"}
        answer = requests.post(f"{base}/authorize", json=body, timeout=5)
        assert answer.json() == {"ok": True, "info_type": "authorized", "pushed": None}
        assert requests.post(f"{base}/revoke", json=body, timeout=5).json()["info_type"] == (
            "unauthorized"
        )
        assert requests.post(f"{base}/revoke", json=body, timeout=5).status_code == 409
        other = {**body, "component_appid": "wxnope"}
        assert requests.post(f"{base}/authorize", json=other, timeout=5).status_code == 400
        bad = {**body, "authorizer_appid": "a b"}
        assert requests.post(f"{base}/authorize", json=bad, timeout=5).status_code == 400
        assert requests.post(f"{base}/stop_pushes", json=body, timeout=5).json() == {"ok": True}


def test_fault_modes_validate() -> None:
    """The new modes are fault modes; component endpoints can be named."""
    fault = Fault.from_json({"mode": "ticket_expired", "endpoints": ["component_token"]})
    assert fault.hits("component_token", (COMPONENT,))
    assert not fault.hits("token", (COMPONENT,))


def test_platform_spec_parses() -> None:
    """The CLI's --platforms: four values and an optional callback URL per platform."""
    (parsed,) = parse_platforms(f"{COMPONENT}:{SECRET}:{TOKEN}:{KEY}@http://127.0.0.1:1/cb?x=1")
    assert parsed == platform("http://127.0.0.1:1/cb?x=1")
    assert parse_platforms("") == []
    with pytest.raises(ValueError, match="#2"):
        parse_platforms(f"{COMPONENT}:{SECRET}:{TOKEN}:{KEY},{COMPONENT}:{SECRET}")


def test_platform_config_is_checked() -> None:
    """A bad appid, key or token is refused naming the field, not the value."""
    with pytest.raises(ValueError, match="component_appid"):
        SandboxPlatform("wx1", SECRET, TOKEN, KEY)
    with pytest.raises(ValueError, match="EncodingAESKey"):
        SandboxPlatform(COMPONENT, SECRET, TOKEN, KEY[:-1])
    with pytest.raises(ValueError, match="token"):
        SandboxPlatform(COMPONENT, SECRET, "a", KEY)
    with pytest.raises(ValueError, match="twice"):
        SandboxConfig(apps={}, platforms=[platform(), platform()])


def test_seed_control_over_http() -> None:
    """Seeded customers come back with refresh tokens the component API accepts; a bad
    prefix or count is a 400 that seeds nothing."""
    config = SandboxConfig(apps={}, platforms=[platform()])
    with SandboxServer(config) as sandbox:
        url = f"{sandbox.base_url}/sandbox/platform/seed"
        for bad in (
            {"component_appid": COMPONENT, "prefix": "wx/..", "count": 2},
            {"component_appid": COMPONENT, "count": 0},
            {"component_appid": COMPONENT, "count": 100_001},
            {"component_appid": COMPONENT, "count": "2"},
            {"component_appid": "wxunknown000000000", "count": 2},
        ):
            assert requests.post(url, json=bad, timeout=5).status_code == 400, bad
        assert sandbox.state.stats()["platforms"][COMPONENT]["authorizers"] == {}
        seeded = requests.post(
            url, json={"component_appid": COMPONENT, "prefix": "wxseed", "count": 2}, timeout=5
        ).json()["authorizers"]
        assert [row["authorizer_appid"] for row in seeded] == ["wxseed00000000", "wxseed00000001"]
        token = live_component_token(sandbox.state)
        answer = call(
            sandbox.state,
            "authorizer_token",
            token,
            component_appid=COMPONENT,
            authorizer_appid="wxseed00000001",
            authorizer_refresh_token=seeded[1]["refresh_token"],
        )
        assert "authorizer_access_token" in answer
