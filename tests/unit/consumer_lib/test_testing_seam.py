"""`consumer_lib.testing`: a service's tests push tokens and read refresh requests."""

from __future__ import annotations

import threading
from typing import Any

import fakeredis
import pytest

from consumer_lib import ClientSettings, TokenClient, TokenUnavailable
from consumer_lib._client.http_transport import GatewayStream
from consumer_lib._client.subscriber import Subscriber
from consumer_lib.settings import GatewayClientSettings
from consumer_lib.testing import StubTransport, stub_client
from tests.conftest import FakeClock
from tests.unit._helpers import T0


def test_a_pushed_token_is_served_and_announced(clock: FakeClock) -> None:
    """`push_token` delivers like the broker: `get_token` serves it at once, `on_update`
    hears it on the client's callback thread (never the pushing test's own)."""
    clock.now_s = T0
    tokens, stub = stub_client(clock=clock)
    seen: list[tuple[str, threading.Thread]] = []
    tokens.on_update(lambda update: seen.append((update.value, threading.current_thread())))
    with tokens:
        stub.push_token("wx1234567890abcdef", "TOKEN-for-the-test-0001")
        stub.push_token("wx1234567890abcdef", "TOKEN-for-the-test-0002")
        assert tokens.get_token("wx1234567890abcdef", timeout=0) == "TOKEN-for-the-test-0002"
        assert stub.wait_callbacks()
    assert [value for value, _ in seen] == ["TOKEN-for-the-test-0001", "TOKEN-for-the-test-0002"]
    assert all(thread is not threading.current_thread() for _, thread in seen)
    assert stub.started
    assert stub.closed


def test_garbage_pushed_is_counted_and_the_token_kept(clock: FakeClock) -> None:
    """`push_raw` of bytes that are no update is rejected like a bad message."""
    clock.now_s = T0
    tokens, stub = stub_client(clock=clock)
    stub.push_token("wx1234567890abcdef", "TOKEN-good-one-0001")
    stub.push_raw(b"\xff{not json")
    assert tokens.stats.rejected == 1
    assert tokens.get_token("wx1234567890abcdef", timeout=0) == "TOKEN-good-one-0001"


def test_report_invalid_is_seen_as_a_request(clock: FakeClock) -> None:
    """What `report_invalid` sends shows up decoded in `stub.requests`."""
    clock.now_s = T0
    tokens, stub = stub_client(clock=clock)
    held = stub.push_token("wx1234567890abcdef", "TOKEN-rejected-0001")
    assert tokens.report_invalid("wx1234567890abcdef", held.value, reason="errcode 40001")
    [request] = stub.requests
    assert request.app_id == "wx1234567890abcdef"
    assert request.is_about(held.value)
    assert request.reported_version == held.version


def test_a_disconnected_stub_refuses_reports_and_nothing_is_held(clock: FakeClock) -> None:
    """With the stub 'offline' reports fail and an unknown app is unavailable."""
    clock.now_s = T0
    tokens, stub = stub_client(clock=clock)
    stub.is_connected = False
    assert not tokens.report_invalid("wx1234567890abcdef", "TOKEN-whatever-0001")
    assert stub.sent == []
    with pytest.raises(TokenUnavailable, match="broker unreachable"):
        tokens.get_token("wx1234567890abcdef", timeout=0.01)


def test_an_unattached_stub_says_so() -> None:
    """Pushing through a stub no client uses is a clear error, not a silent no-op."""
    with pytest.raises(RuntimeError, match="not attached"):
        StubTransport().push_raw(b"{}")
    with pytest.raises(RuntimeError, match="not attached"):
        StubTransport().wait_callbacks()


def test_every_transport_enters_the_client_through_attach(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The broker subscriber, the gateway's HTTP stream and the stub are built first and
    then `attach`ed with the same callbacks (`consumer_lib.transport`): the seam a
    service's tests use is the one production runs."""
    entered: list[tuple[str, list[str]]] = []
    for transport in (Subscriber, GatewayStream, StubTransport):
        original = transport.attach

        def spy(self: object, *, _original: Any = original, **callbacks: Any) -> None:
            entered.append((type(self).__name__, sorted(callbacks)))
            _original(self, **callbacks)

        monkeypatch.setattr(transport, "attach", spy)
    monkeypatch.delenv("WXTOKEN_AMQP_URL", raising=False)
    broker = TokenClient(
        ClientSettings(
            insecure_accept_unsigned=True, amqp_url="amqp://guest:guest@127.0.0.1:1/%2F"
        ),
        redis_client=fakeredis.FakeRedis(),
    )
    over_http = TokenClient.over_http(
        GatewayClientSettings(
            insecure_accept_unsigned=True,
            gateway_url="http://127.0.0.1:1",
            gateway_api_key="k" * 32,
        )
    )
    stubbed, _ = stub_client()
    callbacks = ["callbacks_idle", "on_body", "read_snapshot", "snapshot_wanted"]
    assert entered == [
        ("Subscriber", callbacks),
        ("GatewayStream", callbacks),
        ("StubTransport", callbacks),
    ]
    for client in (broker, over_http, stubbed):
        client.close()
