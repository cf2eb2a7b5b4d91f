"""`TokenClient` over a gateway's stream (`GatewayStream`), against a stand-in gateway.

The behaviours both transports share run once per transport (the broker's `StubTransport`
and `GatewayStream`): the same client code decodes, verifies and caches what either brings.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from consumer_lib import ConfigError, TokenClient, TokenKind, TokenUpdate
from consumer_lib._client.http_transport import GatewayStream
from consumer_lib.settings import GatewayClientSettings, load_settings
from consumer_lib.testing import EmptyRedis, StubTransport
from consumer_lib.wire.refresh_request import fingerprint
from consumer_lib.wire.signing import UpdateCodec, generate_keypair, load_private_key
from tests.unit._helpers import make_update
from tests.unit.consumer_lib._fake_gateway import FakeGateway
from tests.waiting import wait_for

APP = "wxapp1"
KEY = "wxgw_" + "k" * 43


@dataclass
class Feed:
    """A client and a way to deliver bytes to it as its transport would."""

    client: TokenClient
    deliver: Callable[[bytes], None]
    settled: Callable[[int], bool]  # True once n deliveries were handed to the client
    reports: Callable[[], list[tuple[str, str]]]  # (app, token fingerprint) reported


@pytest.fixture
def signer(tmp_path: Path) -> tuple[UpdateCodec, Path]:
    private, public = generate_keypair(tmp_path / "k")
    return UpdateCodec(signer=load_private_key(private)), public


@pytest.fixture(params=["broker", "gateway"])
def feed(request: pytest.FixtureRequest, signer: tuple[UpdateCodec, Path]) -> Iterator[Feed]:
    _, public = signer
    if request.param == "broker":
        stub = StubTransport()
        client = TokenClient(
            GatewayClientSettings(verify_keys=str(public)),
            redis_client=EmptyRedis(),  # type: ignore[arg-type]
            transport=stub,
        )
        pushed = itertools.count(1)

        def deliver(body: bytes) -> None:
            next(pushed)
            stub.push_raw(body)

        yield Feed(
            client,
            deliver,
            lambda n: True,
            lambda: [(r.app_id, r.token_sha256) for r in stub.requests],
        )
        client.close()
        return
    gateway = FakeGateway()
    client = TokenClient.over_http(
        GatewayClientSettings(verify_keys=str(public), gateway_url=gateway.url, gateway_api_key=KEY)
    )
    transport = client._subscriber
    assert isinstance(transport, GatewayStream)
    ids = itertools.count(1)
    client.start()
    yield Feed(
        client,
        lambda body: gateway.push(f"e{next(ids)}", body),
        lambda n: transport.events >= n,
        lambda: [
            (path.split("/")[3], fingerprint(body["access_token"]))
            for path, body in gateway.reports
        ],
    )
    client.close()
    gateway.close()


def _fresh(version: int, value: str = "TOKEN-genuine-aaaaaaaaaaaa") -> TokenUpdate:
    return make_update(app_id=APP, version=version, value=value, issued_at=time.time())


def test_forged_updates_are_dropped_and_the_genuine_kept(
    feed: Feed, signer: tuple[UpdateCodec, Path]
) -> None:
    codec, _ = signer
    genuine = _fresh(3)
    forged = _fresh(9, "TOKEN-from-the-attacker-9999")
    feed.deliver(codec.encode(genuine))
    feed.deliver(forged.encode())  # unsigned
    feed.deliver(UpdateCodec(signer=Ed25519PrivateKey.generate()).encode(forged))
    wait_for(lambda: feed.settled(3), message="three deliveries handed on")
    assert feed.client.get_token(APP, timeout=5) == genuine.value
    assert feed.client.stats.rejected == 2


def test_newer_pushed_replaces_older(feed: Feed, signer: tuple[UpdateCodec, Path]) -> None:
    codec, _ = signer
    feed.deliver(codec.encode(_fresh(3)))
    assert feed.client.get_token(APP, timeout=5) == "TOKEN-genuine-aaaaaaaaaaaa"
    feed.deliver(codec.encode(_fresh(4, "TOKEN-next-bbbbbbbbbbbbbbbb")))
    wait_for(
        lambda: feed.client.get_token(APP, timeout=0) == "TOKEN-next-bbbbbbbbbbbbbbbb",
        message="the next token held",
    )


def test_report_invalid_reaches_whoever_refreshes(
    feed: Feed, signer: tuple[UpdateCodec, Path]
) -> None:
    codec, _ = signer
    feed.deliver(codec.encode(_fresh(3)))
    token = feed.client.get_token(APP, timeout=5)
    assert feed.client.report_invalid(APP, token, reason="40001")
    assert not feed.client.report_invalid(APP, token)  # once per token per 30 s
    assert feed.reports() == [(APP, fingerprint(token))]


# ------------------------------------------------------------------ the HTTP side only
@pytest.fixture
def gateway() -> Iterator[FakeGateway]:
    fake = FakeGateway()
    yield fake
    fake.close()


def _client(gateway: FakeGateway, public: Path, **kw: object) -> TokenClient:
    return TokenClient.over_http(
        GatewayClientSettings(
            verify_keys=str(public),
            gateway_url=gateway.url,
            gateway_api_key=KEY,
            reconnect_max_s=0.5,
            **kw,  # type: ignore[arg-type]
        )
    )


def test_reconnects_with_the_last_event_id(
    gateway: FakeGateway, signer: tuple[UpdateCodec, Path]
) -> None:
    """The stream asks for every app and kind with the key; after a cut it reconnects
    (backoff) with `Last-Event-ID`, and gets what came meanwhile."""
    codec, public = signer
    with _client(gateway, public) as client:
        gateway.push("c1", codec.encode(_fresh(3)))
        assert client.get_token(APP, timeout=5)
        first = gateway.stream_headers[0]
        assert first["authorization"] == f"Bearer {KEY}"
        assert "last-event-id" not in first
        gateway.cut()
        gateway.push("c2", codec.encode(_fresh(4, "TOKEN-after-the-cut-cccccccc")))
        wait_for(
            lambda: client.get_token(APP, timeout=0) == "TOKEN-after-the-cut-cccccccc",
            message="the token pushed after the cut",
        )
        assert gateway.stream_headers[-1]["last-event-id"] == "c1"
        assert client.connected


def test_a_refused_key_is_said_and_retried(
    gateway: FakeGateway, signer: tuple[UpdateCodec, Path]
) -> None:
    _, public = signer
    gateway.status = 401
    with _client(gateway, public) as client:
        wait_for(lambda: len(gateway.stream_headers) >= 2, message="a retry")
        assert not client.connected
        transport = client._subscriber
        assert isinstance(transport, GatewayStream)
        assert transport.last_error == "HTTP 401: unknown API key"
        assert KEY not in (transport.last_error or "")


def test_from_env_picks_the_gateway(
    monkeypatch: pytest.MonkeyPatch, gateway: FakeGateway, signer: tuple[UpdateCodec, Path]
) -> None:
    _, public = signer
    monkeypatch.setenv("WXTOKEN_GATEWAY_URL", gateway.url + "/")
    monkeypatch.setenv("WXTOKEN_GATEWAY_API_KEY", KEY)
    monkeypatch.setenv("WXTOKEN_VERIFY_KEYS", str(public))
    client = TokenClient.from_env()
    try:
        assert isinstance(client._subscriber, GatewayStream)
    finally:
        client.close()
    monkeypatch.delenv("WXTOKEN_GATEWAY_API_KEY")
    with pytest.raises(ConfigError, match="WXTOKEN_GATEWAY_API_KEY"):
        load_settings(GatewayClientSettings)


@pytest.mark.parametrize(
    "url", ["ftp://h", "http://", "http://user:pw@h", "http://h/?apps=x", "redis://h"]
)
def test_bad_gateway_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match="WXTOKEN_GATEWAY_URL"):
        GatewayClientSettings(gateway_url=url, gateway_api_key=KEY, insecure_accept_unsigned=True)


def test_trusted_publishers_cannot_apply_over_http() -> None:
    with pytest.raises(ValueError, match="TRUSTED_PUBLISHERS"):
        GatewayClientSettings(
            gateway_url="http://h", gateway_api_key=KEY, trusted_publishers="wxtoken-producer"
        )


def test_tickets_come_too_but_are_not_reported(
    gateway: FakeGateway, signer: tuple[UpdateCodec, Path]
) -> None:
    codec, public = signer
    with _client(gateway, public) as client:
        ticket = make_update(
            app_id=APP, kind=TokenKind.JSAPI_TICKET, issued_at=time.time(), value="TICKET-x" * 3
        )
        gateway.push("t1", codec.encode(ticket))
        assert client.get_ticket(APP, "jsapi", timeout=5) == ticket.value
        assert gateway.stream_headers[0]["x-path"].startswith(
            "/v1/stream?apps=*&kinds=access_token,jsapi_ticket,"
        )
        assert not client.report_invalid(APP, ticket.value, kind="jsapi")
        assert gateway.reports == []
