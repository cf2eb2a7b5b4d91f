"""The callback receiver over Starlette's TestClient: every answer, what is stored before
`success`, replays, the window, sizes, garbage, a forged flood, and the counts."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from consumer_lib.errors import ConfigError, InvalidUpdate
from producer.platform.crypto import MessageCrypto
from producer.platform.errors import RegistryUnavailable
from producer.platform.events import PlatformEvent
from producer.platform.notice import StoredNotice, events_channel
from producer.platform.receiver import EVENTS_PATH, Receiver, ReplayGuard, build_app
from producer.platform.receiver._metrics import ReceiverCollector
from producer.platform.receiver._rejections import Rejections

APPID = "wx134c8103faa5a59e"
OTHER = "wxb11529c136998cb6"
TOKEN = "AAAAA"
KEY = "A" * 43
NOW = 1_715_943_329.0
URL = EVENTS_PATH.format(component_appid=APPID)


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class FakeRegistry:
    """`record_callback` into a dict by push_id; `down` makes it store nothing."""

    rows: dict[str, tuple[PlatformEvent, str]] = field(default_factory=dict)
    down: bool = False
    calls: int = 0

    def record_callback(self, event: PlatformEvent, encrypt_b64: str) -> bool:
        self.calls += 1
        if self.down:
            raise RegistryUnavailable("database unreachable")
        if event.push_id in self.rows:
            return False
        self.rows[event.push_id] = (event, encrypt_b64)
        return True


@dataclass
class FakeNotifier:
    notices: list[StoredNotice] = field(default_factory=list)
    #: How many rows the registry held when each notice went out.
    stored_then: list[int] = field(default_factory=list)
    registry: FakeRegistry | None = None

    def notify(self, notice: StoredNotice) -> None:
        self.notices.append(notice)
        self.stored_then.append(len(self.registry.rows) if self.registry else -1)


def ticket_xml(ticket: str = "ticket@@@1", appid: str = APPID) -> str:
    return (
        f"<xml><AppId>{appid}</AppId><CreateTime>{int(NOW)}</CreateTime>"
        "<InfoType>component_verify_ticket</InfoType>"
        f"<ComponentVerifyTicket>{ticket}</ComponentVerifyTicket></xml>"
    )


@dataclass
class Setup:
    client: TestClient
    receiver: Receiver
    registry: FakeRegistry
    notifier: FakeNotifier
    clock: Clock
    crypto: MessageCrypto

    def post(
        self,
        xml: str | None = None,
        *,
        timestamp: str | None = None,
        nonce: str = "1590219412",
        crypto: MessageCrypto | None = None,
        url: str = URL,
        signature: str | None = None,
        body: bytes | None = None,
    ) -> tuple[int, str]:
        stamp = str(int(self.clock.now)) if timestamp is None else timestamp
        signed, sealed = (crypto or self.crypto).push(
            ticket_xml() if xml is None else xml, timestamp=stamp, nonce=nonce
        )
        params = {
            "signature": "0" * 40,
            "timestamp": stamp,
            "nonce": nonce,
            "encrypt_type": "aes",
            "msg_signature": signed if signature is None else signature,
        }
        answer = self.client.post(url, params=params, content=sealed if body is None else body)
        return answer.status_code, answer.text


@pytest.fixture
def setup() -> Iterator[Setup]:
    clock = Clock()
    registry = FakeRegistry()
    notifier = FakeNotifier(registry=registry)
    crypto = MessageCrypto(token=TOKEN, encoding_aes_key=KEY, appid=APPID)
    receiver = Receiver(
        {APPID: crypto},
        registry,
        notifier,
        replay=ReplayGuard(window_s=300, clock=clock),
        clock=clock,
    )
    with TestClient(build_app(receiver, max_body_bytes=4096)) as client:
        yield Setup(client, receiver, registry, notifier, clock, crypto)


def test_a_push_is_stored_before_success(setup: Setup) -> None:
    """A good push: stored (event and still-encrypted value), then `success`, then the leader
    is told with appid and push_id only."""
    assert setup.post() == (200, "success")
    ((event, encrypt),) = setup.registry.rows.values()
    assert event.info_type == "component_verify_ticket"
    assert event.verify_ticket == "ticket@@@1"
    assert event.received_at_s == NOW
    assert setup.crypto.decrypt(encrypt) == ticket_xml()
    assert setup.notifier.notices == [StoredNotice(APPID, event.push_id)]
    assert setup.notifier.stored_then == [1]
    assert setup.receiver.stored.new == 1


def test_the_official_vector_push_is_accepted() -> None:
    """The open platform's example (query and Encrypt as published) verifies and decrypts;
    its debug_demo message has no InfoType, so it is refused as malformed, after the crypto."""
    from tests.unit.producer.platform.test_platform_crypto import OPEN_ENCRYPT, OPEN_SIGNATURE

    clock = Clock(1715943329.0)
    crypto = MessageCrypto(token=TOKEN, encoding_aes_key=KEY, appid=APPID)
    registry = FakeRegistry()
    receiver = Receiver(
        {APPID: crypto}, registry, FakeNotifier(), replay=ReplayGuard(clock=clock), clock=clock
    )
    body = f"<xml><ToUserName>gh_97417a04a28d</ToUserName><Encrypt>{OPEN_ENCRYPT}</Encrypt></xml>"
    query = {
        "timestamp": "1715943329",
        "nonce": "1590219412",
        "msg_signature": OPEN_SIGNATURE,
        "encrypt_type": "aes",
    }
    assert receiver.receive(APPID, query, body.encode()).text == "malformed"
    assert receiver.rejections.counts["malformed"] == 1
    assert registry.calls == 0


def test_registry_unavailable_is_503_never_success(setup: Setup) -> None:
    """Nothing stored: 503; the retry (same push) is accepted once the registry is back."""
    setup.registry.down = True
    assert setup.post(nonce="n1") == (503, "registry unavailable")
    assert setup.notifier.notices == []
    assert setup.client.get("/readyz").json()["registry_ok"] is False
    setup.registry.down = False
    assert setup.post(nonce="n1") == (200, "success")
    assert len(setup.registry.rows) == 1
    assert setup.receiver.stored.unavailable == 1
    assert setup.client.get("/readyz").json()["registry_ok"] is True


def test_a_push_stored_before_is_success_again(setup: Setup) -> None:
    """WeChat's retry with a new nonce carries the same Encrypt: stored once, success twice."""
    signed, body = setup.crypto.push(ticket_xml(), timestamp=str(int(NOW)), nonce="n1")
    query = {"timestamp": str(int(NOW)), "nonce": "n1", "msg_signature": signed}
    assert setup.receiver.receive(APPID, query, body).text == "success"
    encrypt = body.decode().split("<Encrypt><![CDATA[")[1].split("]]>")[0]
    again = {
        **query,
        "nonce": "n2",
        "msg_signature": setup.crypto.signature(str(int(NOW)), "n2", encrypt),
    }
    assert setup.receiver.receive(APPID, again, body).text == "success"
    assert len(setup.registry.rows) == 1
    assert (setup.receiver.stored.new, setup.receiver.stored.duplicate) == (1, 1)


def test_replay_is_refused(setup: Setup) -> None:
    """The same signed push a second time within the window: 409, nothing new stored."""
    signed, body = setup.crypto.push(ticket_xml(), timestamp=str(int(NOW)), nonce="n1")
    params = {"timestamp": str(int(NOW)), "nonce": "n1", "msg_signature": signed}
    assert setup.client.post(URL, params=params, content=body).text == "success"
    replayed = setup.client.post(URL, params=params, content=body)
    assert (replayed.status_code, replayed.text) == (409, "replay")
    assert setup.registry.calls == 1
    assert setup.receiver.rejections.counts["replay"] == 1


@pytest.mark.parametrize("offset_s", [-301, 301, -100_000])
def test_stale_timestamp(setup: Setup, offset_s: int) -> None:
    """A timestamp further than the window from our clock is refused, even if signed."""
    assert setup.post(timestamp=str(int(NOW) + offset_s)) == (403, "stale")
    assert setup.registry.calls == 0


def test_inside_the_window(setup: Setup) -> None:
    """Up to the window's edge on either side is accepted."""
    assert setup.post(timestamp=str(int(NOW) - 300), nonce="a") == (200, "success")
    assert setup.post(timestamp=str(int(NOW) + 300), nonce="b") == (200, "success")


def test_replay_memory_forgets_what_the_window_refuses() -> None:
    """A remembered push is forgotten once its timestamp is out of the window; beyond the
    bound the oldest is evicted and counted."""
    clock = Clock()
    guard = ReplayGuard(window_s=300, max_remembered=2, clock=clock)
    guard.remember(int(NOW), "a", "s")
    guard.remember(int(NOW) + 1, "b", "s")
    guard.remember(int(NOW) + 2, "c", "s")
    assert (len(guard), guard.evicted) == (2, 1)
    clock.now = NOW + 400
    guard.remember(int(NOW) + 400, "d", "s")
    assert len(guard) == 1


def test_bad_signature(setup: Setup) -> None:
    """A wrong msg_signature, or the URL's `signature` in its place: 403, nothing stored."""
    assert setup.post(signature="0" * 40) == (403, "bad_signature")
    forged = MessageCrypto(token="BBBBB", encoding_aes_key=KEY, appid=APPID)
    assert setup.post(crypto=forged) == (403, "bad_signature")
    assert setup.registry.calls == 0
    assert setup.receiver.rejections.counts["bad_signature"] == 2


def test_another_platforms_push(setup: Setup) -> None:
    """Sealed for another appid with our token and key: refused as wrong_appid; to a path of
    a platform we do not serve: 404."""
    other = MessageCrypto(token=TOKEN, encoding_aes_key=KEY, appid=OTHER)
    assert setup.post(crypto=other) == (403, "wrong_appid")
    assert setup.post(ticket_xml(appid=OTHER), nonce="x") == (403, "wrong_appid")
    url = EVENTS_PATH.format(component_appid=OTHER)
    assert setup.post(url=url) == (404, "unknown_platform")
    assert setup.registry.calls == 0


def test_oversized_body(setup: Setup) -> None:
    """Over the limit: 413 without reading it all, counted."""
    assert setup.post(body=b"<xml>" + b"A" * 5000 + b"</xml>") == (413, "too_large")
    assert setup.receiver.rejections.counts["too_large"] == 1


@pytest.mark.parametrize(
    "body",
    [b"", b"garbage", b"<xml><Encrypt>!!!</Encrypt></xml>", b"\x00\xff" * 100],
)
def test_garbage_bodies(setup: Setup, body: bytes) -> None:
    """Bodies that are not a signed envelope: 4xx, nothing stored."""
    status, _ = setup.post(body=body)
    assert 400 <= status < 500
    assert setup.registry.calls == 0


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"timestamp": str(int(NOW)), "nonce": "n"},
        {"timestamp": "soon", "nonce": "n", "msg_signature": "0" * 40},
        {"timestamp": str(int(NOW)), "msg_signature": "0" * 40},
        {
            "timestamp": str(int(NOW)),
            "nonce": "n",
            "msg_signature": "0" * 40,
            "encrypt_type": "raw",
        },
    ],
)
def test_bad_queries(setup: Setup, params: dict[str, str]) -> None:
    """Missing or malformed query values: 400 malformed."""
    answer = setup.client.post(URL, params=params, content=b"<xml><Encrypt>QUJD</Encrypt></xml>")
    assert (answer.status_code, answer.text) == (400, "malformed")


def test_wrong_method_and_path(setup: Setup) -> None:
    """GET on the URL and unknown paths are not pushes."""
    assert setup.client.get(URL).status_code == 405
    assert setup.client.post("/wechat/platform/events").status_code == 404


def test_forged_flood_accepts_nothing(setup: Setup) -> None:
    """500 forged pushes (wrong token, tampered, replayed, stale, other appid) among 20 good
    ones: 0 forged accepted, every good one stored."""
    forged_token = MessageCrypto(token="ZZZZZ", encoding_aes_key=KEY, appid=APPID)
    other_key = MessageCrypto(token=TOKEN, encoding_aes_key="B" * 43, appid=APPID)
    accepted_forged = 0
    for i in range(500):
        kind = i % 4
        if kind == 0:
            answer = setup.post(nonce=f"f{i}", crypto=forged_token)
        elif kind == 1:
            answer = setup.post(nonce=f"f{i}", signature=f"{i:040d}")
        elif kind == 2:
            answer = setup.post(nonce=f"f{i}", timestamp=str(int(NOW) - 1000))
        else:
            answer = setup.post(nonce=f"f{i}", crypto=other_key)
        accepted_forged += answer[0] == 200
        if i % 25 == 0:
            assert setup.post(ticket_xml(f"good{i}"), nonce=f"g{i}") == (200, "success")
    assert accepted_forged == 0
    assert len(setup.registry.rows) == 20
    counts = setup.receiver.rejections.counts
    assert sum(counts.values()) == 500
    assert counts["bad_signature"] == 250  # another token, a made-up signature
    assert counts["stale"] == 125
    assert counts["undecryptable"] + counts["wrong_appid"] == 125  # the token, not the key


def test_refusals_are_logged_at_most_once_a_minute_per_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """100 refusals of one reason: one line, then one more a minute later with the count."""
    clock = Clock(0.0)
    rejections = Rejections(clock=clock)
    with caplog.at_level(logging.WARNING, logger="producer.platform.receiver"):
        for _ in range(100):
            rejections.add("bad_signature", APPID)
        rejections.add("stale", "<script>")
        clock.now = 61.0
        rejections.add("bad_signature", APPID)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3
    assert "(100 refused" not in lines[0]
    assert "platform ?: stale" in lines[1]
    assert "bad_signature (100 refused for this reason" in lines[2]


def test_metrics_count_by_reason(setup: Setup) -> None:
    """The collector: refusals by reason (every reason present), stored new/duplicate."""
    setup.post()
    setup.post(signature="0" * 40)
    families = {m.name: m for m in ReceiverCollector(setup.receiver).collect()}
    rejected = {
        s.labels["reason"]: s.value for s in families["wxtoken_platform_callbacks_rejected"].samples
    }
    assert rejected["bad_signature"] == 1
    assert set(rejected) >= {"malformed", "stale", "replay", "too_large", "unknown_platform"}
    stored = {
        s.labels["result"]: s.value for s in families["wxtoken_platform_callbacks_stored"].samples
    }
    assert stored == {"new": 1.0, "duplicate": 0.0}


def test_health_and_readiness(setup: Setup) -> None:
    """/healthz is alive; /readyz names the platforms served."""
    assert setup.client.get("/healthz").json() == {"status": "alive"}
    ready = setup.client.get("/readyz").json()
    assert ready == {"status": "ready", "platforms": [APPID], "registry_ok": True}


def test_notice_round_trip_and_channel() -> None:
    """The hint is appid and push_id only, on `{prefix}:platform:events`; anything else in it
    is refused by the reader."""
    notice = StoredNotice(APPID, "a" * 40)
    assert StoredNotice.decode(notice.encode()) == notice
    assert events_channel("wxtoken") == "wxtoken:platform:events"
    for raw in (b"x", b"{}", b'{"component_appid":"wx","push_id":"zz"}'):
        with pytest.raises(InvalidUpdate):
            StoredNotice.decode(raw)


def test_redis_notifier_publishes_and_survives_an_outage(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """PUBLISH on the channel; a Redis error is counted, never raised, and an outage is one
    WARNING when it starts and one INFO when it ends."""
    import fakeredis

    from producer.platform.receiver import RedisNotifier

    server = fakeredis.FakeServer()
    client = fakeredis.FakeRedis(server=server)
    pubsub = client.pubsub()
    pubsub.subscribe("wxtoken:platform:events")
    pubsub.get_message(timeout=1)
    notifier = RedisNotifier(client, "wxtoken")
    notifier.notify(StoredNotice(APPID, "a" * 40))
    message = pubsub.get_message(timeout=1)
    assert message is not None
    assert StoredNotice.decode(message["data"]) == StoredNotice(APPID, "a" * 40)
    caplog.set_level(logging.INFO, logger="producer.platform.receiver._receiver")
    server.connected = False
    notifier.notify(StoredNotice(APPID, "b" * 40))
    notifier.notify(StoredNotice(APPID, "c" * 40))
    assert notifier.failed == 2
    server.connected = True
    notifier.notify(StoredNotice(APPID, "d" * 40))
    said = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert [level for level, _ in said] == ["WARNING", "INFO"]
    assert said[0][1].startswith(
        "Redis (telling the leader about stored pushes) unreachable: ConnectionError"
    )
    assert said[0][1].endswith("; the leader finds them by polling")
    assert "available again after" in said[1][1]


def test_wiring_loads_token_and_key_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """make_receiver: the platforms from the file (the secret's variable unset), the registry
    from the factory given."""
    from producer.platform.receiver import ReceiverSettings
    from producer.platform.receiver._wiring import make_receiver

    path = tmp_path / "platforms.toml"
    path.write_text(
        f'[[platforms]]\ncomponent_appid = "{APPID}"\nsecret_env = "P_SECRET"\n'
        'token_env = "P_TOKEN"\nencoding_aes_key_env = "P_KEY"\n'
    )
    monkeypatch.setenv("P_TOKEN", TOKEN)
    monkeypatch.setenv("P_KEY", KEY)
    monkeypatch.delenv("P_SECRET", raising=False)
    registry = FakeRegistry()
    settings = ReceiverSettings(platforms_file=path)
    receiver, notifier = make_receiver(settings, lambda _: registry)
    assert list(receiver.platforms) == [APPID]
    assert notifier.channel == "wxtoken:platform:events"


def test_main_exits_2_on_a_configuration_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A missing platforms file: one line on stderr, exit code 2, no server."""
    from producer.platform.receiver import __main__ as entry

    monkeypatch.setattr(entry, "configure_logging", lambda level: None)
    monkeypatch.setenv("WXTOKEN_PLATFORMS_FILE", str(tmp_path / "missing.toml"))
    assert entry.main([], registry_factory=lambda _: FakeRegistry()) == 2
    err = capsys.readouterr().err
    assert err.startswith("wxtoken-platform-receiver: configuration error: platforms file")
    assert err.count("\n") == 1


def test_without_a_database_the_receiver_does_not_start(tmp_path: Path) -> None:
    """No WXTOKEN_PLATFORM_DB_URL: a one-line configuration error naming it, never a
    receiver that answers success without a database."""
    from producer.platform.receiver import ReceiverSettings
    from producer.platform.receiver._wiring import open_registry

    settings = ReceiverSettings(platforms_file=tmp_path / "p.toml")
    with pytest.raises(ConfigError, match="WXTOKEN_PLATFORM_DB_URL is not set"):
        open_registry(settings)
