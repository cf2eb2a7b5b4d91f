"""consumer_lib.amqp without a broker: error translation and pipelined confirms."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pika.exceptions
import pika.spec
import pytest

from consumer_lib.amqp import Connection, PipelinedChannel, translated
from consumer_lib.amqp.errors import in_words
from consumer_lib.errors import BrokerError, BrokerLoginRefused, ExchangeMissing, PublishRefused
from tests.unit._helpers import T0, make_update


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (pika.exceptions.ChannelClosedByBroker(404, "NOT_FOUND - no exchange"), ExchangeMissing),
        (pika.exceptions.ChannelClosedByBroker(406, "PRECONDITION_FAILED"), BrokerError),
        (pika.exceptions.NackError([]), PublishRefused),
        (pika.exceptions.StreamLostError("Transport indicated EOF"), BrokerError),
        (pika.exceptions.AMQPConnectionError("refused"), BrokerError),
        (ConnectionResetError("reset by peer"), BrokerError),
    ],
)
def test_every_pika_failure_becomes_a_broker_error(
    raised: Exception, expected: type[BrokerError]
) -> None:
    """pika's exceptions leave `translated` as ours, saying what was being done."""
    with pytest.raises(expected) as info, translated("publishing to wx.test"):
        raise raised
    assert type(info.value) is expected
    assert str(info.value).startswith("publishing to wx.test: ")
    assert info.value.__cause__ is None


def test_other_exceptions_pass_through_untouched() -> None:
    """A bug is not a broker error: it is not hidden as one."""
    with pytest.raises(ZeroDivisionError), translated("anything"):
        raise ZeroDivisionError


class FakeImpl:
    """pika's asynchronous channel: confirms turn on at once; publishes are recorded."""

    def __init__(self) -> None:
        self.published: list[bytes] = []
        self.on_ack_nack: Callable[[Any], None] = lambda frame: None

    def confirm_delivery(
        self, *, ack_nack_callback: Callable[[Any], None], callback: Callable[[Any], None]
    ) -> None:
        self.on_ack_nack = ack_nack_callback
        callback(None)

    def basic_publish(self, exchange: str, key: str, body: bytes, props: Any, m: bool) -> None:
        self.published.append(body)


def fake_channel(impl: FakeImpl) -> Any:
    connection = SimpleNamespace(call_soon=lambda cb: None, process_events=lambda s: None)
    return SimpleNamespace(
        raw=SimpleNamespace(_impl=impl), user_id="guest", connection=connection, is_open=True
    )


def frame(method: Any) -> Any:
    return SimpleNamespace(method=method)


def test_confirms_are_matched_to_publishes_by_delivery_tag() -> None:
    """Single and multiple acks and nacks reach `on_confirm` with the right items."""
    impl = FakeImpl()
    confirmed: list[tuple[int, bool]] = []
    pipe: PipelinedChannel[int] = PipelinedChannel(
        fake_channel(impl), lambda item, acked: confirmed.append((item, acked))
    )
    for n in range(1, 6):
        pipe.publish_update(n * 10, "wx.test", make_update(version=n), now_s=T0, sender="t")
    assert len(impl.published) == 5
    assert pipe.in_flight == 5
    impl.on_ack_nack(frame(pika.spec.Basic.Ack(delivery_tag=2, multiple=True)))
    impl.on_ack_nack(frame(pika.spec.Basic.Nack(delivery_tag=4, multiple=False)))
    impl.on_ack_nack(frame(pika.spec.Basic.Ack(delivery_tag=4, multiple=False)))  # no repeat
    assert confirmed == [(10, True), (20, True), (40, False)]
    assert pipe.take_in_flight() == [30, 50]
    assert pipe.in_flight == 0


@pytest.mark.parametrize(
    ("raised", "words"),
    [
        (pika.exceptions.StreamLostError("Transport indicated EOF"), "connection closed"),
        (
            pika.exceptions.IncompatibleProtocolError(
                "StreamLostError: (\"Stream connection lost: ConnectionResetError(104, 'x')\",)"
            ),
            "connection closed",
        ),
        (
            pika.exceptions.AMQPConnectionError(
                "ConnectionRefusedError: [Errno 111] Connection refused"
            ),
            "connection refused",
        ),
        (ConnectionRefusedError(111, "Connection refused"), "connection refused"),
        (
            pika.exceptions.AMQPConnectionError(
                pika.exceptions.AMQPConnectionError("ConnectionRefusedError(111, 'refused')")
            ),
            "connection refused",
        ),
        (pika.exceptions.AMQPHeartbeatTimeout("no heartbeat"), "timed out"),
    ],
)
def test_broker_errors_say_what_happened_in_words(raised: Exception, words: str) -> None:
    """Each translated failure carries a few words for the outage's one log line."""
    with pytest.raises(BrokerError) as info, translated("connecting to the broker"):
        raise raised
    assert in_words(info.value) == words


@pytest.mark.parametrize(
    ("raised", "said"),
    [
        (
            pika.exceptions.ProbableAuthenticationError(
                "(403) 'ACCESS_REFUSED - Login was refused"
            ),
            "the broker refused user 'svc-user' (ACCESS_REFUSED: wrong user or password): "
            "check the user and password in WXTOKEN_AMQP_URL",
        ),
        (
            pika.exceptions.ProbableAccessDeniedError("(530) 'NOT_ALLOWED - vhost prod not found"),
            "the broker refused user 'svc-user' access to virtual host 'prod'",
        ),
    ],
)
def test_a_refused_login_is_a_login_refused_error_naming_user_and_variable(
    monkeypatch: pytest.MonkeyPatch, raised: Exception, said: str
) -> None:
    """pika's ProbableAuthenticationError / ProbableAccessDeniedError at connect become
    `BrokerLoginRefused` naming the user and what to fix, never the password."""
    from consumer_lib.amqp import connection as connection_module

    def refuse(params: object) -> None:
        raise raised

    monkeypatch.setattr(connection_module.pika, "BlockingConnection", refuse)
    params = pika.URLParameters("amqp://svc-user:hunter2-pw@127.0.0.1:5672/prod")
    with pytest.raises(BrokerLoginRefused) as info:
        Connection.open([params], what="connecting to the broker")
    assert str(info.value).startswith(said)
    assert "hunter2" not in str(info.value)
    assert in_words(info.value) == "login refused"
