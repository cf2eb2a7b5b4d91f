"""Issue 18 item 11: garbage on the requests exchange is counted, and logged once a minute
with a count, not once per message; forged control messages are charged to their sender's
allowance before any signature is checked."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import fakeredis
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from consumer_lib.amqp import Delivery
from consumer_lib.wire.control import CONTROL_MESSAGE_TYPE
from consumer_lib.wire.keys import KeyLayout
from consumer_lib.wire.refresh_request import REQUEST_MESSAGE_TYPE
from producer.limits.requesters import RequesterLimits
from producer.messaging.control import ControlHandler
from producer.messaging.request_listener import RequestListener
from producer.observability.metrics import _messages
from producer.observability.summed_log import SummedWarning
from tests.conftest import FakeClock

LOGIN = "wxtoken-consumer"


def rig(clock: FakeClock) -> tuple[RequestListener, ControlHandler]:
    handler = ControlHandler(
        fakeredis.FakeRedis(),
        KeyLayout("wxunit"),
        apps=[],
        upstream=None,
        verify_keys=[Ed25519PrivateKey.generate().public_key()],
        is_leader=lambda: True,
        producer_id="p1",
        clock=clock,
    )
    listener = RequestListener(
        "amqp://guest:guest@127.0.0.1:1/%2F",
        "wxunit.tokens",
        on_request=lambda request: None,
        on_control=handler.handle,
        connection_name="test",
        limits=RequesterLimits(rate_per_s=1.0, burst=30, clock=clock),
        clock=clock,
    )
    return listener, handler


def garbage(listener: RequestListener, n: int) -> None:
    """Half malformed refresh requests, half forged control requests, from one login."""
    for i in range(n):
        kind = CONTROL_MESSAGE_TYPE if i % 2 else REQUEST_MESSAGE_TYPE
        body = b'{"forged": %d}' % i if i % 2 else b"not json %d" % i
        listener._handle(Delivery(body, user_id=LOGIN, app_id="attacker", type=kind))


def test_5000_bad_messages_make_a_bounded_number_of_lines_and_are_counted(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """5,000 bad messages: at most a few WARNING lines (one per kind, one for the allowance),
    every message counted in the metrics; only the allowance's worth of forged control
    messages reaches the signature check."""
    listener, handler = rig(clock)
    with caplog.at_level(logging.INFO, logger="producer"):
        garbage(listener, 5000)
    lines = [r.getMessage() for r in caplog.records]
    assert 1 <= len(lines) <= 3, lines
    assert listener.stats.rejected == 2500
    assert handler.stats.rejected == 30  # the burst; the rest was never verified
    assert listener.stats.control_dropped == 2470
    received, refused = _messages(SimpleNamespace(requests=listener, control=handler))  # type: ignore[arg-type]
    assert received == 5000
    assert refused[("refresh_request", "invalid")] == 2500
    assert refused[("control", "invalid")] == 30
    assert refused[("control", "over_rate")] == 2470

    caplog.clear()
    clock.advance(61)
    with caplog.at_level(logging.INFO, logger="producer"):
        garbage(listener, 2)
    summed = [r.getMessage() for r in caplog.records if "rejected a message" in r.getMessage()]
    assert len(summed) == 1
    assert "2499 more like it since the last such line" in summed[0]


def test_a_summed_warning_logs_once_a_period_with_the_count(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """The first occurrence at once, then one line per period naming how many were not."""
    summed = SummedWarning(logging.getLogger("producer.test"), every_s=60, clock=clock)
    with caplog.at_level(logging.WARNING, logger="producer.test"):
        assert summed.note("bad thing %s", "x")
        assert not any(summed.note("bad thing %s", "y") for _ in range(99))
        clock.advance(60)
        assert summed.note("bad thing %s", "z")
    assert [r.getMessage() for r in caplog.records] == [
        "bad thing x",
        "bad thing z (and 99 more like it since the last such line)",
    ]
