"""consumer_lib.amqp without a broker: error translation and pipelined confirms."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pika.exceptions
import pika.spec
import pytest

from consumer_lib.amqp import PipelinedChannel, translated
from consumer_lib.errors import BrokerError, ExchangeMissing, PublishRefused
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
