"""`TokenClient.report_invalid`: what it sends, when it stays quiet, and never the token."""

from __future__ import annotations

from collections.abc import Iterator

import fakeredis
import pytest

from consumer_lib import ClientSettings, TokenClient
from consumer_lib.testing import StubTransport
from consumer_lib.wire.refresh_request import REQUEST_MESSAGE_TYPE, RefreshRequest, fingerprint
from producer.store.tokens import TokenStore
from tests.conftest import FakeClock
from tests.unit._helpers import T0, make_update


@pytest.fixture
def stub() -> StubTransport:
    """Stands in for the broker thread: records what the client sends."""
    return StubTransport()


@pytest.fixture
def client(clock: FakeClock, stub: StubTransport) -> Iterator[TokenClient]:
    clock.now_s = T0 + 10
    made = TokenClient(
        ClientSettings(
            insecure_accept_unsigned=True,
            exchange="wx.test",
            amqp_url="amqp://guest:guest@127.0.0.1:1/%2F",
        ),
        redis_client=fakeredis.FakeRedis(),
        clock=clock,
        transport=stub,
    )
    stub.push(make_update(version=3))
    yield made
    made.close()


def sent(stub: StubTransport) -> list[tuple[str, bytes, str]]:
    return stub.sent


def test_report_sends_the_fingerprint_not_the_token(
    client: TokenClient, stub: StubTransport
) -> None:
    """A report goes to the requests exchange carrying only the token's SHA-256."""
    token = make_update(version=3).value
    assert client.report_invalid("wxapp1", token, reason="errcode 40001")
    [(exchange, body, message_type)] = sent(stub)
    request = RefreshRequest.decode(body)
    assert exchange == "wx.test.requests"
    assert message_type == REQUEST_MESSAGE_TYPE
    assert request.token_sha256 == fingerprint(token)
    assert request.reported_version == 3
    assert token.encode() not in body


def test_same_token_is_reported_once_per_process(client: TokenClient, stub: StubTransport) -> None:
    """Many reports of one token from one process send one request; the leader coalesces."""
    token = make_update(version=3).value
    results = [client.report_invalid("wxapp1", token) for _ in range(50)]
    assert results.count(True) == 1
    assert len(sent(stub)) == 1


def test_no_report_when_a_newer_token_is_already_held(
    client: TokenClient, stub: StubTransport
) -> None:
    """Reporting a token this process already replaced sends nothing: get_token() has
    the new one."""
    stub.push(make_update(version=4, value="TOKEN-newer-one-0002"))
    assert not client.report_invalid("wxapp1", make_update(version=3).value)
    assert sent(stub) == []


def test_broker_unreachable_reads_the_snapshot_instead(
    client: TokenClient, stub: StubTransport
) -> None:
    """With no broker connection the report returns False and Redis is read for a newer
    token."""
    stub.is_connected = False
    newer = make_update(version=4, value="TOKEN-newer-in-redis-0004")
    TokenStore(client._redis).write(newer)
    assert not client.report_invalid("wxapp1", make_update(version=3).value)
    assert client.get_token("wxapp1", timeout=0) == newer.value


def test_bad_app_id_is_a_value_error(client: TokenClient, stub: StubTransport) -> None:
    """A malformed app id raises ValueError before anything is sent."""
    with pytest.raises(ValueError, match="app_id"):
        client.report_invalid("not an app id!", "TOKEN-x")
    assert sent(stub) == []


@pytest.mark.parametrize("kind", ["jsapi", "wx_card", "corp_jsapi", "agent_config"])
def test_report_for_each_ticket_kind(client: TokenClient, stub: StubTransport, kind: str) -> None:
    """A ticket report names the ticket's kind; a different ticket already held stays quiet."""
    from consumer_lib import TokenKind

    ticket_kind = TokenKind.parse(kind)
    held = make_update(version=2, kind=ticket_kind, value="TICKET-held-0002-zzzzzzzzz")
    stub.push(held)
    assert not client.report_invalid("wxapp1", "TICKET-older-zzzzzzzzzzzz", kind=kind)
    assert client.report_invalid("wxapp1", held.value, kind=kind)
    [(_, body, _)] = sent(stub)
    request = RefreshRequest.decode(body)
    assert (request.kind, request.reported_version) == (ticket_kind, 2)
    assert request.token_sha256 == fingerprint(held.value)


def test_report_with_an_unknown_kind_is_a_value_error(
    client: TokenClient, stub: StubTransport
) -> None:
    """report_invalid refuses a kind that does not exist, sending nothing."""
    with pytest.raises(ValueError, match="unknown credential kind"):
        client.report_invalid("wxapp1", "x" * 20, kind="jsapi_tickets")
    assert sent(stub) == []


@pytest.mark.parametrize("reason", ["next\x85line", "line\u2028separator", "para\u2029graph"])
def test_a_reason_the_wire_refuses_raises_and_holds_nothing_back(
    client: TokenClient, stub: StubTransport, reason: str
) -> None:
    """Issue 18 item 12: a report whose reason the wire model refuses raises (a ValueError)
    and sends nothing, and it does not mark the token reported: the next, valid report of
    the same token goes out at once (before: held back for 30 s)."""
    token = make_update(version=3).value
    with pytest.raises(ValueError, match="reason"):
        client.report_invalid("wxapp1", token, reason=reason)
    assert sent(stub) == []
    assert client.report_invalid("wxapp1", token, reason="errcode 40001")
    assert len(sent(stub)) == 1


def test_reports_before_the_first_connection_are_queued_bounded_then_sent() -> None:
    """Before the first connection a report waits (up to MAX_PENDING_REPORTS, then it is
    refused as unreachable); once connected they go out in order and nothing waits more."""
    from consumer_lib._client.reporting import MAX_PENDING_REPORTS, InvalidReporter, ReportOutcome
    from consumer_lib.wire.update import TokenKind

    reporter = InvalidReporter("wxunit.tokens", clock=lambda: 1_800_000_000.0)
    reporter.await_first_connection()
    snapshots: list[str] = []
    outcomes = [
        reporter.report(
            "wxapp1",
            f"TOKEN-{n:04d}-abcdefghijklmnop",
            TokenKind.ACCESS_TOKEN,
            held=None,
            reason=None,
            send=lambda *_: False,
            read_snapshot=lambda app_id, kind: snapshots.append(app_id),
        )
        for n in range(MAX_PENDING_REPORTS + 1)
    ]
    assert outcomes[:-1] == [ReportOutcome.QUEUED] * MAX_PENDING_REPORTS
    assert outcomes[-1] is ReportOutcome.BROKER_UNREACHABLE
    assert snapshots == ["wxapp1"]
    sent: list[bytes] = []
    reporter.flush_pending(lambda exchange, body, kind: sent.append(body) or True)
    assert len(sent) == MAX_PENDING_REPORTS
    assert b"TOKEN" not in b"".join(sent)
    later = reporter.report(
        "wxapp1",
        "TOKEN-later-abcdefghijklmnop",
        TokenKind.ACCESS_TOKEN,
        held=None,
        reason=None,
        send=lambda *_: False,
        read_snapshot=lambda app_id, kind: None,
    )
    assert later is ReportOutcome.BROKER_UNREACHABLE  # after the first connection: no queue
