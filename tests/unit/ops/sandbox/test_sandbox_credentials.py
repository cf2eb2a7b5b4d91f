"""Unit tests for the sandbox's tickets, clear_quota, WeCom agents and per-endpoint faults."""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
from collections.abc import Iterator

import pytest
import requests

from ops.sandbox import (
    Fault,
    SandboxConfig,
    SandboxServer,
    SandboxState,
    WecomAgent,
    fault_reply,
    parse_wecom,
)

APPS = {"wx_app_a": "secret-a", "wx_app_b": "secret-b"}
AGENTS = (WecomAgent("ww_corp", "1000002", "agent-2"), WecomAgent("ww_corp", "1000003", "agent-3"))
T0 = 1_700_000_000.0


class FakeClock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make_state(clock: FakeClock, **limits: int) -> SandboxState:
    config = SandboxConfig(
        apps=APPS, expires_in_s=7200, overlap_s=300.0, wecom_agents=AGENTS, **limits
    )
    return SandboxState(config, clock)


@pytest.fixture
def state(clock: FakeClock) -> SandboxState:
    return make_state(clock)


def classic(state: SandboxState, appid: str = "wx_app_a") -> str:
    token = state.classic_token(appid, APPS[appid], "client_credential")["access_token"]
    assert isinstance(token, str)
    return token


def wecom(state: SandboxState, agent: WecomAgent = AGENTS[0]) -> dict[str, object]:
    return state.wecom_token(agent.corp_id, agent.secret)


def errcode(answer: dict[str, object]) -> object:
    return answer.get("errcode")


# --- official-account tickets ----------------------------------------------------------


def test_ticket_fetched_with_a_superseded_token_gets_40001(
    state: SandboxState, clock: FakeClock
) -> None:
    """A ticket fetch with a token replaced past its overlap is refused with 40001."""
    old = classic(state)
    classic(state)
    clock.now += 301
    assert errcode(state.ticket(old, "jsapi")) == 40001


def test_ticket_fetched_with_an_expired_token_gets_42001(
    state: SandboxState, clock: FakeClock
) -> None:
    """A ticket fetch with an expired token is refused with 42001."""
    token = classic(state)
    clock.now += 7200
    assert errcode(state.ticket(token, "wx_card")) == 42001


def test_ticket_outlives_the_token_that_fetched_it(state: SandboxState, clock: FakeClock) -> None:
    """A ticket stays accepted until its own expiry after its token is superseded."""
    token = classic(state)
    ticket = state.ticket(token, "jsapi")["ticket"]
    assert isinstance(ticket, str)
    classic(state)
    clock.now += 3600
    status = state.ticket_status(ticket)
    assert status["valid"] is True
    assert (status["owner"], status["type"]) == ("wx_app_a", "jsapi")
    clock.now += 3600
    assert state.ticket_status(ticket)["valid"] is False
    assert state.ticket_status("never-issued")["valid"] is False


def test_jsapi_and_card_tickets_are_distinct_and_counted(state: SandboxState) -> None:
    """Each ticket type has its own ticket; calls are counted per type and app."""
    token = classic(state)
    jsapi = state.ticket(token, "jsapi")["ticket"]
    card = state.ticket(token, "wx_card")["ticket"]
    assert jsapi != card
    assert state.ticket(token, "jsapi")["ticket"] == jsapi
    assert state.calls("getticket/jsapi", "wx_app_a") == 2
    assert state.calls("issued/jsapi", "wx_app_a") == 1
    assert state.calls("getticket/wx_card", "wx_app_a") == 1


def test_wecom_token_cannot_fetch_an_official_account_ticket(state: SandboxState) -> None:
    """The two platforms' token spaces do not mix: a WeCom token gets 40001 on getticket."""
    token = wecom(state)["access_token"]
    assert errcode(state.ticket(str(token), "jsapi")) == 40001
    assert errcode(state.wecom_ticket(classic(state), "corp_jsapi")) == 40014


def test_jssdk_signature_is_verified_against_the_live_ticket(state: SandboxState) -> None:
    """verify_signature accepts WeChat's sha1 over the live ticket, and nothing else."""
    ticket = state.ticket(classic(state), "jsapi")["ticket"]
    url = "https://h5.example.com/page?x=1"
    plain = f"jsapi_ticket={ticket}&noncestr=abc&timestamp=1700000000&url={url}"
    good = hashlib.sha1(plain.encode(), usedforsecurity=False).hexdigest()
    assert state.verify_signature("wx_app_a", "jsapi", url, "abc", "1700000000", good)
    assert not state.verify_signature("wx_app_a", "jsapi", url + "#f", "abc", "1700000000", good)
    assert not state.verify_signature("wx_app_a", "jsapi", url, "abd", "1700000000", good)
    assert not state.verify_signature("wx_app_b", "jsapi", url, "abc", "1700000000", good)


# --- clear_quota ----------------------------------------------------------------------


def test_clear_quota_needs_appid_and_secret(state: SandboxState) -> None:
    """clear_quota/v2 checks the app's credentials and the body's shape."""
    assert errcode(state.clear_quota(b'{"appid": "wx_app_a", "appsecret": "nope"}')) == 40125
    assert errcode(state.clear_quota(b'{"appid": "wx_nope", "appsecret": "x"}')) == 40013
    assert errcode(state.clear_quota(b"[1, 2]")) == 47001
    assert errcode(state.clear_quota(b'{"appid": 5}')) == 47001
    assert errcode(state.clear_quota(b"{oops")) == 47001


def test_clear_quota_restores_force_refresh_and_is_limited(
    state: SandboxState, clock: FakeClock
) -> None:
    """Clearing gives back force_refresh calls; the 11th clear of a month gets 48006."""
    body = {"grant_type": "client_credential", "appid": "wx_app_a", "secret": "secret-a"}
    for _ in range(20):
        assert "access_token" in state.stable_token({**body, "force_refresh": True})
        clock.now += 31
    assert errcode(state.stable_token({**body, "force_refresh": True})) == 45009
    clear = json.dumps({"appid": "wx_app_a", "appsecret": "secret-a"})
    assert state.clear_quota(clear) == {"errcode": 0, "errmsg": "ok"}
    assert "access_token" in state.stable_token({**body, "force_refresh": True})
    for _ in range(9):
        assert errcode(state.clear_quota(clear)) == 0
    assert errcode(state.clear_quota(clear)) == 48006
    clock.now += 30 * 86_400
    assert errcode(state.clear_quota(clear)) == 0


# --- WeCom ----------------------------------------------------------------------------


def test_wecom_gettoken_returns_the_same_token_until_expiry(
    state: SandboxState, clock: FakeClock
) -> None:
    """Within its validity gettoken repeats the token with a shrinking expires_in."""
    first = wecom(state)
    assert first["expires_in"] == 7200
    assert first["errcode"] == 0
    clock.now += 7000.5
    again = wecom(state)
    assert again["access_token"] == first["access_token"]
    assert again["expires_in"] == 199
    clock.now += 199.5
    renewed = wecom(state)
    assert renewed["access_token"] != first["access_token"]
    assert renewed["expires_in"] == 7200
    assert state.stats()["wecom_issued"] == {"ww_corp/1000002": 2, "ww_corp/1000003": 0}


def test_wecom_tokens_are_per_agent(state: SandboxState) -> None:
    """Two agents of one corp get different tokens; each works only for its own agent."""
    token_2 = str(wecom(state, AGENTS[0])["access_token"])
    token_3 = str(wecom(state, AGENTS[1])["access_token"])
    assert token_2 != token_3
    assert state.wecom_agent_get(token_2, "1000002")["agentid"] == 1000002
    assert errcode(state.wecom_agent_get(token_2, "1000003")) == 301002


@pytest.mark.parametrize(
    ("corp_id", "secret", "code"),
    [
        (None, "agent-2", 41002),
        ("ww_other", "agent-2", 40013),
        ("ww_corp", None, 41004),
        ("ww_corp", "wrong", 40001),
    ],
)
def test_wecom_gettoken_errcodes(
    state: SandboxState, corp_id: str | None, secret: str | None, code: int
) -> None:
    """gettoken answers WeCom's errcodes for missing or wrong credentials."""
    assert errcode(state.wecom_token(corp_id, secret)) == code


def test_wecom_invalidated_token_gets_40014_and_a_new_one(state: SandboxState) -> None:
    """A token WeCom invalidated early is refused with 40014; gettoken then issues anew."""
    token = str(wecom(state)["access_token"])
    assert state.invalidate("ww_corp/1000002")
    assert errcode(state.wecom_ticket(token, "agent_config")) == 40014
    assert wecom(state)["access_token"] != token
    assert not state.invalidate("ww_corp/1000003")  # holds no token


def test_wecom_tickets_repeat_and_expire(state: SandboxState, clock: FakeClock) -> None:
    """Corp and agent tickets are distinct, repeat within validity, and 42001 after expiry."""
    token = str(wecom(state)["access_token"])
    corp = state.wecom_ticket(token, "corp_jsapi")
    agent = state.wecom_ticket(token, "agent_config")
    assert corp["ticket"] != agent["ticket"]
    clock.now += 100
    again = state.wecom_ticket(token, "corp_jsapi")
    assert again["ticket"] == corp["ticket"]
    assert again["expires_in"] == 7100
    assert errcode(state.wecom_ticket(token, "jsapi")) == 40058
    clock.now += 7100
    assert errcode(state.wecom_ticket(token, "corp_jsapi")) == 42001


def test_wecom_agent_ticket_limit_per_agent(clock: FakeClock) -> None:
    """Over the per-agent hourly limit a ticket call gets 45009; the other agent is unaffected."""
    state = make_state(clock, agent_tickets_per_hour=3)
    token_2 = str(wecom(state, AGENTS[0])["access_token"])
    token_3 = str(wecom(state, AGENTS[1])["access_token"])
    for _ in range(3):
        assert errcode(state.wecom_ticket(token_2, "agent_config")) == 0
    assert errcode(state.wecom_ticket(token_2, "agent_config")) == 45009
    assert errcode(state.wecom_ticket(token_3, "agent_config")) == 0
    clock.now += 3600
    assert errcode(state.wecom_ticket(token_2, "agent_config")) == 0


def test_wecom_corp_ticket_limit_spans_agents(clock: FakeClock) -> None:
    """The corp limit counts corp-ticket calls of all agents of the corp together."""
    state = make_state(clock, corp_tickets_per_hour=2)
    token_2 = str(wecom(state, AGENTS[0])["access_token"])
    token_3 = str(wecom(state, AGENTS[1])["access_token"])
    assert errcode(state.wecom_ticket(token_2, "corp_jsapi")) == 0
    assert errcode(state.wecom_ticket(token_3, "corp_jsapi")) == 0
    assert errcode(state.wecom_ticket(token_3, "corp_jsapi")) == 45009
    assert errcode(state.wecom_ticket(token_3, "agent_config")) == 0


def test_getcallbackip_checks_both_platforms(state: SandboxState) -> None:
    """getcallbackip accepts live tokens of either platform and counts per credential."""
    assert state.check(classic(state)) == {"ip_list": ["127.0.0.1"]}
    assert state.check(str(wecom(state)["access_token"])) == {"ip_list": ["127.0.0.1"]}
    assert state.calls("getcallbackip", "ww_corp/1000002") == 1


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("ww:1", "#1 must be corp_id:agent_id:secret"),
        ("ww:1:sekrit,ww::sekrit", "#2 must be"),
        ("ww:abc:sekrit", "#1: an agent_id is 1-12 digits"),
        ("w w:1:sekrit", "#1: a corp_id"),
        ("ww:1:sekrit,ww:1:t", "listed twice"),
        ("ww:1:sekrit,ww:2:sekrit", "share a secret"),
    ],
)
def test_parse_wecom_rejects_bad_specs(spec: str, message: str) -> None:
    """parse_wecom names the bad entry without echoing its secret."""
    with pytest.raises(ValueError, match=message) as info:
        parse_wecom(spec)
    assert "sekrit" not in str(info.value)


def test_parse_wecom_reads_agents() -> None:
    """corp:agent:secret entries become agents; the secret may contain ':'."""
    assert parse_wecom("") == []
    agents = parse_wecom("ww:1000002:s:1, ww:1000003:t")
    assert [(a.key, a.secret) for a in agents] == [("ww/1000002", "s:1"), ("ww/1000003", "t")]
    assert "s:1" not in repr(agents)


# --- faults ----------------------------------------------------------------------------


def test_ip_fault_names_the_caller_ip_like_wechat() -> None:
    """The 40164 errmsg names the caller's IPv4 and its IPv6 form, then a rid."""
    body = json.loads(fault_reply("ip", caller_ip="10.1.2.3")[2])
    assert body["errcode"] == 40164
    assert re.fullmatch(
        r"invalid ip 10\.1\.2\.3 ipv6 ::ffff:10\.1\.2\.3, not in whitelist rid: [0-9a-f-]+",
        body["errmsg"],
    )
    wecom_body = json.loads(fault_reply("ip", endpoint="wecom_gettoken", caller_ip="10.1.2.3")[2])
    assert wecom_body["errcode"] == 60020
    assert "from ip: 10.1.2.3" in wecom_body["errmsg"]


@pytest.mark.parametrize(
    ("endpoint", "code"),
    [("getticket", 40001), ("wecom_agent_ticket", 40014)],
)
def test_invalid_credential_fault_speaks_each_platform(endpoint: str, code: int) -> None:
    """The invalid_credential fault answers 40001 on WeChat and 40014 on WeCom."""
    assert json.loads(fault_reply("invalid_credential", endpoint=endpoint)[2])["errcode"] == code


def test_faults_hit_only_their_endpoints(state: SandboxState) -> None:
    """A fault for getticket leaves token endpoints alone, and the default hits no tickets."""
    token = classic(state)
    state.set_fault(Fault("busy", endpoints=frozenset({"getticket"})))
    assert state.take_fault("wx_app_a", endpoint="token") is None
    assert state.take_fault("wx_app_a", endpoint="getticket") is not None
    state.set_fault(Fault("busy"))
    assert state.take_fault("wx_app_a", endpoint="getticket") is None
    assert state.take_fault(
        *state.owners("wecom_gettoken", {"corpid": "ww_corp"}), endpoint="wecom_gettoken"
    )
    assert state.owners("getticket", {"access_token": token}) == ("wx_app_a",)
    assert state.calls("rejected/getticket", "wx_app_a") == 1


def test_fault_names_unknown_endpoints() -> None:
    """A fault naming an endpoint that does not exist is refused."""
    with pytest.raises(ValueError, match="unknown endpoints"):
        Fault.from_json({"mode": "busy", "endpoints": ["tokn"]})
    with pytest.raises(ValueError, match="list of endpoint names"):
        Fault.from_json({"mode": "busy", "endpoints": "token"})


# --- over HTTP ------------------------------------------------------------------------


@pytest.fixture
def server() -> Iterator[SandboxServer]:
    config = SandboxConfig(apps=APPS, wecom_agents=AGENTS)
    with SandboxServer(config) as running:
        yield running


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        session.trust_env = False
        yield session


def test_http_wecom_flow(server: SandboxServer, http: requests.Session) -> None:
    """gettoken, both ticket endpoints, agent/get and a faulted ticket call over HTTP."""
    base = server.base_url
    token = http.get(
        f"{base}/cgi-bin/gettoken", params={"corpid": "ww_corp", "corpsecret": "agent-2"}, timeout=5
    ).json()["access_token"]
    corp = http.get(f"{base}/cgi-bin/get_jsapi_ticket", params={"access_token": token}, timeout=5)
    agent = http.get(
        f"{base}/cgi-bin/ticket/get",
        params={"access_token": token, "type": "agent_config"},
        timeout=5,
    )
    assert corp.json()["errcode"] == agent.json()["errcode"] == 0
    status = http.get(
        f"{base}/sandbox/ticket", params={"ticket": agent.json()["ticket"]}, timeout=5
    )
    assert status.json()["type"] == "agent_config"
    corp_via_agent_path = http.get(
        f"{base}/cgi-bin/ticket/get",
        params={"access_token": token, "type": "corp_jsapi"},
        timeout=5,
    )
    assert corp_via_agent_path.json()["errcode"] == 40058
    other = http.get(
        f"{base}/cgi-bin/agent/get", params={"access_token": token, "agentid": "1000003"}, timeout=5
    )
    assert other.json()["errcode"] == 301002
    fault = {"mode": "ip", "count": 1, "apps": ["ww_corp"], "endpoints": ["wecom_corp_ticket"]}
    assert http.post(f"{base}/sandbox/fault", json=fault, timeout=5).status_code == 200
    refused = http.get(
        f"{base}/cgi-bin/get_jsapi_ticket", params={"access_token": token}, timeout=5
    )
    assert refused.json()["errcode"] == 60020
    named = re.search(r"from ip: (\S+),", refused.json()["errmsg"])
    assert named is not None
    ipaddress.ip_address(named.group(1))
    calls = http.get(f"{base}/sandbox/stats", timeout=5).json()["calls"]
    assert calls["wecom_ticket/corp_jsapi"] == {"ww_corp/1000002": 1}
    assert calls["rejected/wecom_corp_ticket"] == {"ww_corp": 1, "ww_corp/1000002": 1}


def test_http_clear_quota_and_controls(server: SandboxServer, http: requests.Session) -> None:
    """clear_quota/v2 answers over HTTP; bad control bodies are 400."""
    base = server.base_url
    cleared = http.post(
        f"{base}/cgi-bin/clear_quota/v2",
        json={"appid": "wx_app_a", "appsecret": "secret-a"},
        timeout=5,
    )
    assert cleared.json() == {"errcode": 0, "errmsg": "ok"}
    assert http.post(f"{base}/sandbox/invalidate", json={"owner": 3}, timeout=5).status_code == 400
    bad = http.post(f"{base}/sandbox/verify_signature", json={"owner": "x"}, timeout=5)
    assert bad.status_code == 400
