"""`TokenClient.report_invalid`: what it sends, when it stays quiet, and never the token."""

from __future__ import annotations

from collections.abc import Iterator

import fakeredis
import pytest

from consumer_lib import ClientSettings, TokenClient
from consumer_lib.wire.refresh_request import REQUEST_MESSAGE_TYPE, RefreshRequest, fingerprint
from producer.store import TokenStore
from tests.conftest import FakeClock
from tests.unit._helpers import T0, make_update


class FakeSubscriber:
    """Stands in for the broker thread: records what `send` was given."""

    def __init__(self, connected: bool = True) -> None:
        self.connected = connected
        self.sent: list[tuple[str, bytes, str]] = []

    def send(self, exchange: str, body: bytes, message_type: str) -> bool:
        if not self.connected:
            return False
        self.sent.append((exchange, body, message_type))
        return True

    def close(self) -> None:
        """Nothing to stop."""


@pytest.fixture
def client(clock: FakeClock) -> Iterator[TokenClient]:
    clock.now_s = T0 + 10
    made = TokenClient(
        ClientSettings(
            insecure_accept_unsigned=True,
            exchange="wx.test",
            amqp_url="amqp://guest:guest@127.0.0.1:1/%2F",
        ),
        redis_client=fakeredis.FakeRedis(),
        clock=clock,
    )
    made._subscriber = FakeSubscriber()  # type: ignore[assignment]
    made._on_body(make_update(version=3).encode())
    yield made
    made.close()


def sent(client: TokenClient) -> list[tuple[str, bytes, str]]:
    return client._subscriber.sent  # type: ignore[attr-defined,no-any-return]


def test_report_sends_the_fingerprint_not_the_token(client: TokenClient) -> None:
    """A report goes to the requests exchange carrying only the token's SHA-256."""
    token = make_update(version=3).value
    assert client.report_invalid("wxapp1", token, reason="errcode 40001")
    [(exchange, body, message_type)] = sent(client)
    request = RefreshRequest.decode(body)
    assert exchange == "wx.test.requests"
    assert message_type == REQUEST_MESSAGE_TYPE
    assert request.token_sha256 == fingerprint(token)
    assert request.reported_version == 3
    assert token.encode() not in body


def test_same_token_is_reported_once_per_process(client: TokenClient) -> None:
    """Many reports of one token from one process send one request; the leader coalesces."""
    token = make_update(version=3).value
    results = [client.report_invalid("wxapp1", token) for _ in range(50)]
    assert results.count(True) == 1
    assert len(sent(client)) == 1


def test_no_report_when_a_newer_token_is_already_held(client: TokenClient) -> None:
    """Reporting a token this process already replaced sends nothing: get_token() has
    the new one."""
    client._on_body(make_update(version=4, value="TOKEN-newer-one-0002").encode())
    assert not client.report_invalid("wxapp1", make_update(version=3).value)
    assert sent(client) == []


def test_broker_unreachable_reads_the_snapshot_instead(client: TokenClient) -> None:
    """With no broker connection the report returns False and Redis is read for a newer
    token."""
    client._subscriber = FakeSubscriber(connected=False)  # type: ignore[assignment]
    newer = make_update(version=4, value="TOKEN-newer-in-redis-0004")
    TokenStore(client._redis).write(newer)
    assert not client.report_invalid("wxapp1", make_update(version=3).value)
    assert client.get_token("wxapp1", timeout=0) == newer.value


def test_bad_app_id_is_a_value_error(client: TokenClient) -> None:
    """A malformed app id raises ValueError before anything is sent."""
    with pytest.raises(ValueError, match="app_id"):
        client.report_invalid("not an app id!", "TOKEN-x")
    assert sent(client) == []
