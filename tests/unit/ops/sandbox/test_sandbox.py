"""Unit tests for the local WeChat stand-in (ops._sandbox)."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from http.client import HTTPConnection
from urllib.parse import urlsplit

import pytest
import requests

from ops.sandbox import (
    FORCE_REFRESH_PER_DAY,
    Fault,
    SandboxConfig,
    SandboxServer,
    SandboxState,
    fault_reply,
    parse_apps,
)

APPS = {"wx_app_a": "secret-a", "wx_app_b": "secret-b"}
T0 = 1_700_000_000.0
EXPIRES_IN_S = 7200
OVERLAP_S = 300.0


class FakeClock:
    """A clock that only moves when a test advances it."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def state(clock: FakeClock) -> SandboxState:
    config = SandboxConfig(apps=APPS, expires_in_s=EXPIRES_IN_S, overlap_s=OVERLAP_S)
    return SandboxState(config, clock)


def classic(state: SandboxState, appid: str = "wx_app_a") -> str:
    answer = state.classic_token(appid, APPS[appid], "client_credential")
    token = answer["access_token"]
    assert isinstance(token, str), answer
    return token


def stable(state: SandboxState, appid: str = "wx_app_a", force: bool = False) -> dict[str, object]:
    body = {"grant_type": "client_credential", "appid": appid, "secret": APPS[appid]}
    return state.stable_token({**body, "force_refresh": force})


def errcode(answer: dict[str, object]) -> object:
    return answer.get("errcode")


def fetches(state: SandboxState, appid: str = "wx_app_a") -> dict[str, int]:
    counts = state.stats()["fetches"]
    assert isinstance(counts, dict)
    return dict(counts[appid])


# --- classic tokens --------------------------------------------------------------------


def test_classic_token_looks_like_wechat(state: SandboxState) -> None:
    """A classic fetch returns a long url-safe token, its lifetime, and the token works."""
    answer = state.classic_token("wx_app_a", "secret-a", "client_credential")
    token = answer["access_token"]
    assert isinstance(token, str)
    assert re.fullmatch(r"[A-Za-z0-9_-]{100,160}", token)
    assert answer["expires_in"] == EXPIRES_IN_S
    assert state.check(token) == {"ip_list": ["127.0.0.1"]}


def test_each_classic_fetch_issues_a_new_token(state: SandboxState) -> None:
    """Classic fetches never hand out the same token twice."""
    assert len({classic(state) for _ in range(5)}) == 5


def test_classic_fetch_keeps_previous_token_only_for_the_overlap(
    state: SandboxState, clock: FakeClock
) -> None:
    """The previous classic token works for overlap_s after a new fetch, then is rejected."""
    first = classic(state)
    clock.advance(100)
    second = classic(state)
    clock.advance(OVERLAP_S - 1)
    assert state.is_valid(first)
    clock.advance(2)
    assert not state.is_valid(first)
    assert errcode(state.check(first)) == 40001
    assert state.is_valid(second)


def test_classic_overlap_never_outlives_the_old_token(
    state: SandboxState, clock: FakeClock
) -> None:
    """A token superseded near its end still expires at its own expiry, with 42001."""
    first = classic(state)
    clock.advance(EXPIRES_IN_S - 100)
    classic(state)
    clock.advance(100)
    assert errcode(state.check(first)) == 42001


def test_token_expires_with_42001(state: SandboxState, clock: FakeClock) -> None:
    """A token works until expires_in seconds have passed, then answers 42001."""
    token = classic(state)
    clock.advance(EXPIRES_IN_S - 0.5)
    assert state.is_valid(token)
    clock.advance(0.5)
    assert not state.is_valid(token)
    assert errcode(state.check(token)) == 42001


@pytest.mark.parametrize(("token", "code"), [("not-a-token", 40001), (None, 41001), ("", 41001)])
def test_unknown_or_missing_token_is_rejected(
    state: SandboxState, token: str | None, code: int
) -> None:
    """getcallbackip rejects tokens the sandbox never issued, and a missing one."""
    assert errcode(state.check(token)) == code


# --- stable tokens ---------------------------------------------------------------------


def test_stable_returns_same_token_until_last_overlap_window(
    state: SandboxState, clock: FakeClock
) -> None:
    """Stable mode repeats its token with shrinking expires_in, renewing only at the end."""
    first = stable(state)
    assert first["expires_in"] == EXPIRES_IN_S
    clock.advance(1000.4)
    again = stable(state)
    assert again == {"access_token": first["access_token"], "expires_in": EXPIRES_IN_S - 1001}
    clock.advance(EXPIRES_IN_S - 1000.4 - OVERLAP_S - 0.5)  # 300.5 s left
    assert stable(state)["access_token"] == first["access_token"]
    clock.advance(1)  # 299.5 s left: inside the last overlap window
    renewed = stable(state)
    assert renewed["access_token"] != first["access_token"]
    assert renewed["expires_in"] == EXPIRES_IN_S
    old = first["access_token"]
    assert isinstance(old, str)
    assert state.is_valid(old)  # the old one lives until its own expiry
    clock.advance(300)
    assert errcode(state.check(old)) == 42001


def test_stable_and_classic_token_spaces_are_independent(
    state: SandboxState, clock: FakeClock
) -> None:
    """Classic fetches neither replace nor invalidate the stable token."""
    token = stable(state)["access_token"]
    assert isinstance(token, str)
    classic(state)
    clock.advance(OVERLAP_S + 1)
    classic(state)
    assert state.is_valid(token)
    assert stable(state)["access_token"] == token


def test_force_refresh_invalidates_the_old_token_at_once(state: SandboxState) -> None:
    """force_refresh issues a new stable token and the old one stops working immediately."""
    old = stable(state)["access_token"]
    new = stable(state, force=True)["access_token"]
    assert isinstance(old, str)
    assert isinstance(new, str)
    assert new != old
    assert errcode(state.check(old)) == 40001
    assert state.is_valid(new)
    assert stable(state)["access_token"] == new


def test_force_refresh_needs_30_seconds_between_calls(
    state: SandboxState, clock: FakeClock
) -> None:
    """A second force_refresh within 30 s gets 45011; at 30 s it succeeds."""
    stable(state, force=True)
    clock.advance(29)
    refused = stable(state, force=True)
    assert errcode(refused) == 45011
    assert "30 s apart" in str(refused["errmsg"])
    clock.advance(1)
    assert "access_token" in stable(state, force=True)


def test_force_refresh_is_limited_per_day(state: SandboxState, clock: FakeClock) -> None:
    """The 21st force_refresh in 24 h gets 45009, per app, until the day has passed."""
    for _ in range(FORCE_REFRESH_PER_DAY):
        assert "access_token" in stable(state, force=True)
        clock.advance(30)
    refused = stable(state, force=True)
    assert errcode(refused) == 45009
    assert "per day" in str(refused["errmsg"])
    assert "access_token" in stable(state, "wx_app_b", force=True)
    clock.advance(86_400 - 30 * FORCE_REFRESH_PER_DAY)  # the first call is now 24 h old
    assert "access_token" in stable(state, force=True)


def test_stable_accepts_a_raw_json_body(state: SandboxState) -> None:
    """stable_token takes the raw request body as well as parsed JSON."""
    body = {"grant_type": "client_credential", "appid": "wx_app_a", "secret": "secret-a"}
    assert "access_token" in state.stable_token(json.dumps(body).encode())


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"\xff\xfe",
        "[1, 2]",
        None,
        {"grant_type": "client_credential", "appid": 7, "secret": "secret-a"},
        {"grant_type": "client_credential", "appid": "wx_app_a", "secret": "secret-a",
         "force_refresh": "yes"},
    ],
)  # fmt: skip
def test_stable_rejects_malformed_bodies_with_47001(state: SandboxState, body: object) -> None:
    """A stable_token body that is not a proper JSON object gets 47001 data format error."""
    assert state.stable_token(body) == {"errcode": 47001, "errmsg": "data format error"}


CREDENTIAL_CASES = [
    pytest.param("wx_nope", "secret-a", "client_credential", 40013, id="unknown-appid"),
    pytest.param("wx_app_a", "wrong", "client_credential", 40125, id="wrong-secret"),
    pytest.param(None, "secret-a", "client_credential", 41002, id="missing-appid"),
    pytest.param("wx_app_a", None, "client_credential", 41004, id="missing-secret"),
    pytest.param("wx_app_a", "secret-a", "password", 40002, id="bad-grant-type"),
]


@pytest.mark.parametrize(("appid", "secret", "grant_type", "code"), CREDENTIAL_CASES)
def test_bad_credentials_get_wechat_errcodes(
    state: SandboxState, appid: str | None, secret: str | None, grant_type: str, code: int
) -> None:
    """Classic and stable both refuse bad appid/secret/grant_type, and count no fetch."""
    assert errcode(state.classic_token(appid, secret, grant_type)) == code
    body = {"grant_type": grant_type, "appid": appid, "secret": secret}
    assert errcode(state.stable_token(body)) == code
    assert state.stats()["issued"] == {"wx_app_a": 0, "wx_app_b": 0}
    assert not any(fetches(state).values())


# --- tickets ---------------------------------------------------------------------------


def test_ticket_repeats_until_its_last_overlap_window(
    state: SandboxState, clock: FakeClock
) -> None:
    """A valid token gets the same jsapi ticket until its last overlap window, then a new one."""
    token = classic(state)
    first = state.ticket(token, "jsapi")
    assert first["errcode"] == 0
    assert first["expires_in"] == EXPIRES_IN_S
    clock.advance(EXPIRES_IN_S - OVERLAP_S - 1)
    token = classic(state)
    assert state.ticket(token, "jsapi")["ticket"] == first["ticket"]
    clock.advance(2)
    assert state.ticket(token, "jsapi")["ticket"] != first["ticket"]


def test_ticket_needs_a_valid_token_and_type(state: SandboxState, clock: FakeClock) -> None:
    """getticket answers 40001 / 42001 for bad tokens and 40097 for an unknown type."""
    token = classic(state)
    assert errcode(state.ticket("bogus", "jsapi")) == 40001
    assert errcode(state.ticket(token, "nonsense")) == 40097
    clock.advance(EXPIRES_IN_S)
    assert errcode(state.ticket(token, "jsapi")) == 42001


# --- faults ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "code"), [("busy", -1), ("quota", 45009), ("minute_limit", 45011), ("ip", 40164)]
)
def test_errcode_fault_replies(mode: str, code: int) -> None:
    """errcode faults answer HTTP 200 with the WeChat error JSON."""
    status, content_type, body = fault_reply(mode)
    assert status == 200
    assert content_type == "application/json"
    assert json.loads(body)["errcode"] == code


def test_ip_fault_mentions_the_whitelist() -> None:
    """The ip fault's errmsg tells the reader the IP is not whitelisted."""
    assert "not in whitelist" in json.loads(fault_reply("ip")[2])["errmsg"]


@pytest.mark.parametrize(("mode", "status"), [("http500", 500), ("garbage", 200)])
def test_html_fault_replies(mode: str, status: int) -> None:
    """http500 and garbage faults answer an HTML page, not JSON."""
    code, content_type, body = fault_reply(mode)
    assert (code, content_type.split(";")[0]) == (status, "text/html")
    with pytest.raises(ValueError, match="Expecting value"):
        json.loads(body)


def test_truncated_fault_reply_is_cut_json() -> None:
    """The truncated fault answers JSON that stops in the middle of the token."""
    status, _, body = fault_reply("truncated")
    assert status == 200
    assert body == b'{"access_token": "ab'
    with pytest.raises(json.JSONDecodeError):
        json.loads(body)


def test_fault_with_count_clears_itself(state: SandboxState) -> None:
    """A fault with count=2 hits two token requests, then the sandbox is healthy again."""
    state.set_fault(Fault("busy", count=2))
    hits = [state.take_fault("wx_app_a") for _ in range(3)]
    assert [f.mode if f else None for f in hits] == ["busy", "busy", None]
    assert state.stats()["fault"] is None
    assert fetches(state)["rejected"] == 2


def test_fault_restricted_to_apps(state: SandboxState) -> None:
    """A fault limited to some appids leaves other apps (and unknown ones) alone."""
    state.set_fault(Fault("quota", apps=frozenset({"wx_app_b"})))
    assert state.take_fault("wx_app_a") is None
    assert state.take_fault(None) is None
    hit = state.take_fault("wx_app_b")
    assert hit is not None
    assert hit.mode == "quota"
    assert fetches(state, "wx_app_b")["rejected"] == 1
    assert fetches(state, "wx_app_a")["rejected"] == 0


def test_fault_without_count_lasts_until_cleared(state: SandboxState) -> None:
    """A fault with count=None keeps failing until mode none clears it."""
    state.set_fault(Fault("ip"))
    assert all(state.take_fault("wx_app_a") is not None for _ in range(5))
    state.set_fault(Fault("none"))
    assert state.take_fault("wx_app_a") is None
    assert state.stats()["fault"] is None


def test_timeout_fault_is_not_counted_as_rejected(state: SandboxState) -> None:
    """A timeout fault delays the request but the request itself still succeeds."""
    state.set_fault(Fault("timeout", count=1, delay_s=5))
    hit = state.take_fault("wx_app_a")
    assert hit is not None
    assert hit.delay_s == 5
    assert fetches(state)["rejected"] == 0


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ([], "JSON object"),
        ({"mode": "explode"}, "unknown fault mode"),
        ({"mode": 3}, "'mode' must be a string"),
        ({"mode": "busy", "count": 0}, "positive integer"),
        ({"mode": "busy", "count": True}, "positive integer"),
        ({"mode": "busy", "delay_s": -1}, "delay_s"),
        ({"mode": "timeout"}, "delay_s > 0"),
        ({"mode": "busy", "apps": "wx_app_a"}, "list of appids"),
        ({"mode": "busy", "colour": "red"}, "unknown fault fields"),
    ],
)
def test_fault_from_json_rejects_bad_bodies(payload: object, message: str) -> None:
    """A malformed fault body raises ValueError saying what is wrong."""
    with pytest.raises(ValueError, match=message):
        Fault.from_json(payload)


def test_fault_from_json_accepts_full_body() -> None:
    """A complete fault body round-trips through as_json."""
    body = {
        "mode": "timeout",
        "count": 3,
        "delay_s": 1.5,
        "apps": ["wx_app_b", "wx_app_a"],
        "endpoints": ["getticket", "token"],
    }
    assert Fault.from_json(body).as_json() == {
        **body,
        "apps": ["wx_app_a", "wx_app_b"],
        "endpoints": ["getticket", "token"],
    }


# --- stats and reset -------------------------------------------------------------------


def test_stats_count_fetches_issued_tokens_and_rejections(state: SandboxState) -> None:
    """Stats count each kind of fetch, new tokens only as issued, and fault rejections."""
    classic(state)
    classic(state)
    stable(state)
    stable(state)  # same token again: a fetch, not an issued token
    stable(state, force=True)
    stable(state, force=True)  # refused by the 30 s rule: counted as an attempt only
    state.classic_token("wx_app_a", "wrong", "client_credential")
    state.set_fault(Fault("busy", count=1))
    state.take_fault("wx_app_a")
    assert state.stats() == {
        "fetches": {
            "wx_app_a": {"classic": 2, "stable": 2, "stable_forced": 2, "rejected": 1},
            "wx_app_b": {"classic": 0, "stable": 0, "stable_forced": 0, "rejected": 0},
        },
        "issued": {"wx_app_a": 4, "wx_app_b": 0},
        "wecom_issued": {},
        "calls": {"rejected/token": {"wx_app_a": 1}},
        "fault": None,
        "platforms": {},  # no open platform configured
    }


def test_reset_forgets_tokens_stats_and_fault(state: SandboxState) -> None:
    """After reset, old tokens are unknown, counters are zero and no fault is set."""
    token = classic(state)
    state.set_fault(Fault("busy"))
    state.reset()
    assert errcode(state.check(token)) == 40001
    assert state.stats()["issued"] == {"wx_app_a": 0, "wx_app_b": 0}
    assert state.stats()["fault"] is None


# --- parse_apps ------------------------------------------------------------------------


def test_parse_apps_reads_pairs() -> None:
    """parse_apps splits on commas and the first colon, trimming blanks."""
    assert parse_apps(" wx_a:s1 , wx_b:s:2") == {"wx_a": "s1", "wx_b": "s:2"}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "no apps given"),
        ("   ", "no apps given"),
        ("wx_a", "has no ':'"),
        ("wx_a:", "empty appid or secret"),
        (":s1", "empty appid or secret"),
        ("wx_a:s1,,wx_b:s2", "#2 is empty"),
        ("wx_a:s1,wx_a:s2", "duplicate appid 'wx_a'"),
    ],
)
def test_parse_apps_rejects_bad_specs(spec: str, message: str) -> None:
    """parse_apps raises ValueError naming the problem for malformed specs."""
    with pytest.raises(ValueError, match=message):
        parse_apps(spec)


def test_parse_apps_errors_do_not_echo_secrets() -> None:
    """A malformed entry's error message does not repeat the secret."""
    with pytest.raises(ValueError, match="#2") as info:
        parse_apps("wx_a:s1,wx_b-topsecret")
    assert "topsecret" not in str(info.value)


# --- over real HTTP --------------------------------------------------------------------


def wait_until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        threading.Event().wait(0.01)


@pytest.fixture
def server() -> Iterator[SandboxServer]:
    with SandboxServer(SandboxConfig(apps=APPS)) as running:
        yield running


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        session.trust_env = False  # never go through a proxy to reach 127.0.0.1
        yield session


def test_http_token_and_getcallbackip_round_trip(
    server: SandboxServer, http: requests.Session
) -> None:
    """Tokens fetched over HTTP (classic and stable) are accepted by getcallbackip."""
    base = server.base_url
    assert base.startswith("http://127.0.0.1:")
    params = {"grant_type": "client_credential", "appid": "wx_app_a", "secret": "secret-a"}
    classic_token = http.get(f"{base}/cgi-bin/token", params=params, timeout=5).json()
    stable_answer = http.post(f"{base}/cgi-bin/stable_token", json=params, timeout=5).json()
    for token in (classic_token["access_token"], stable_answer["access_token"]):
        check = http.get(f"{base}/cgi-bin/getcallbackip", params={"access_token": token}, timeout=5)
        assert check.json() == {"ip_list": ["127.0.0.1"]}
    bogus = http.get(f"{base}/cgi-bin/getcallbackip", params={"access_token": "x"}, timeout=5)
    assert (bogus.status_code, bogus.json()["errcode"]) == (200, 40001)
    bad_body = http.post(f"{base}/cgi-bin/stable_token", data=b"{oops", timeout=5)
    assert bad_body.json()["errcode"] == 47001


def test_http_fault_and_stats(server: SandboxServer, http: requests.Session) -> None:
    """A fault set over HTTP fails token calls as configured and shows up in the stats."""
    base = server.base_url
    params = {"grant_type": "client_credential", "appid": "wx_app_a", "secret": "secret-a"}
    fault = {"mode": "http500", "count": 1, "apps": ["wx_app_a"]}
    assert http.post(f"{base}/sandbox/fault", json=fault, timeout=5).status_code == 200
    stats = http.get(f"{base}/sandbox/stats", timeout=5).json()
    assert stats["fault"] == {**fault, "delay_s": 0.0, "endpoints": None}
    failed = http.post(f"{base}/cgi-bin/stable_token", json=params, timeout=5)
    assert failed.status_code == 500
    assert "text/html" in failed.headers["Content-Type"]
    http.post(f"{base}/sandbox/fault", json={"mode": "truncated"}, timeout=5)
    truncated = http.get(f"{base}/cgi-bin/token", params=params, timeout=5)
    with pytest.raises(requests.JSONDecodeError):
        truncated.json()
    http.post(f"{base}/sandbox/fault", json={"mode": "none"}, timeout=5)
    assert "access_token" in http.get(f"{base}/cgi-bin/token", params=params, timeout=5).json()
    stats = http.get(f"{base}/sandbox/stats", timeout=5).json()
    assert stats["fetches"]["wx_app_a"] == {
        "classic": 1,
        "stable": 0,
        "stable_forced": 0,
        "rejected": 2,
    }
    assert stats["issued"] == {"wx_app_a": 1, "wx_app_b": 0}
    assert stats["fault"] is None
    assert http.post(f"{base}/sandbox/reset", timeout=5).json() == {"ok": True}
    assert http.get(f"{base}/sandbox/stats", timeout=5).json()["issued"]["wx_app_a"] == 0


def test_http_timeout_fault_does_not_delay_stop(http: requests.Session) -> None:
    """A request stuck in a timeout fault is dropped and stop() still returns promptly."""
    server = SandboxServer(SandboxConfig(apps=APPS)).start()
    server.state.set_fault(Fault("timeout", count=1, delay_s=60))
    outcome: list[object] = []

    def fetch() -> None:
        params = {"grant_type": "client_credential", "appid": "wx_app_a", "secret": "secret-a"}
        try:
            outcome.append(http.get(f"{server.base_url}/cgi-bin/token", params=params, timeout=30))
        except requests.RequestException as exc:
            outcome.append(exc)

    client = threading.Thread(target=fetch)
    client.start()
    wait_until(lambda: server.state.stats()["fault"] is None)  # the request is now waiting
    # stop() must not wait for the stuck request's 60 s: far sooner is all that is asserted.
    stopper = threading.Thread(target=server.stop, daemon=True)
    stopper.start()
    stopper.join(timeout=20)
    assert not stopper.is_alive(), "stop() waited for the stuck request"
    client.join(timeout=20)
    assert not client.is_alive()
    assert len(outcome) == 1
    assert isinstance(outcome[0], requests.ConnectionError)
    assert server.state.stats()["issued"] == {"wx_app_a": 0, "wx_app_b": 0}


@pytest.mark.parametrize(
    "body", [b"{oops", b'{"mode": "explode"}', b'{"mode": "busy", "count": -1}']
)
def test_http_bad_fault_body_is_400(
    server: SandboxServer, http: requests.Session, body: bytes
) -> None:
    """/sandbox/fault answers HTTP 400 with a JSON error and keeps the previous fault."""
    answer = http.post(f"{server.base_url}/sandbox/fault", data=body, timeout=5)
    assert answer.status_code == 400
    assert "bad fault" in answer.json()["error"]
    assert server.state.stats()["fault"] is None


@pytest.mark.parametrize(("method", "path"), [("GET", "/nope"), ("POST", "/cgi-bin/nope")])
def test_http_unknown_path_is_404(
    server: SandboxServer, http: requests.Session, method: str, path: str
) -> None:
    """Unknown paths answer HTTP 404 with a JSON error."""
    answer = http.request(method, f"{server.base_url}{path}", timeout=5)
    assert answer.status_code == 404
    assert path in answer.json()["error"]


def test_connections_are_kept_alive_as_wechats_are() -> None:
    """Several calls on one connection, as on WeChat's servers: an HTTP/1.0 answer closed
    it after each call (a handshake and a server thread per fetch, for 30,000 of them)."""
    with SandboxServer(SandboxConfig(apps=APPS)) as server:
        where = urlsplit(server.base_url)
        connection = HTTPConnection(where.hostname, where.port, timeout=5)
        try:
            for _ in range(3):
                connection.request("GET", "/sandbox/stats")
                answer = connection.getresponse()
                assert answer.status == 200
                assert answer.version == 11
                json.loads(answer.read())
                assert not answer.will_close
        finally:
            connection.close()


def test_stop_is_idempotent_and_closes_the_port(http: requests.Session) -> None:
    """stop() may be called twice, also on a never-started server, and frees the port."""
    SandboxServer(SandboxConfig(apps=APPS)).stop()
    server = SandboxServer(SandboxConfig(apps=APPS)).start()
    url = f"{server.base_url}/sandbox/stats"
    assert http.get(url, timeout=5).status_code == 200
    server.stop()
    server.stop()
    with pytest.raises(requests.ConnectionError):
        http.get(url, timeout=5)
    with pytest.raises(RuntimeError, match="only once"):
        server.start()
