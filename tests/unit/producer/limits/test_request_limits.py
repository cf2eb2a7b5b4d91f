"""Per-requester limits on refresh requests, by the broker-checked `user_id`."""

from __future__ import annotations

import logging

import pytest

from consumer_lib.amqp import Delivery
from consumer_lib.wire.refresh_request import REQUEST_MESSAGE_TYPE, RefreshRequest
from producer.limits.requesters import UNVERIFIED, RequesterLimits
from producer.messaging.request_listener import RequestListener
from tests.conftest import FakeClock

APP = "wx1234567890abcdef"


def request_body(requester: str, token: str = "T" * 40) -> bytes:
    return RefreshRequest.for_token(APP, token, requester=requester, now_s=1.8e9).encode()


def listener(limits: RequesterLimits, got: list[RefreshRequest]) -> RequestListener:
    return RequestListener(
        "amqp://guest:guest@127.0.0.1:1/%2F",
        "wxunit.tokens",
        on_request=got.append,
        connection_name="test",
        limits=limits,
    )


def deliver(target: RequestListener, user_id: str | None, requester: str = "client:x") -> None:
    target._handle(
        Delivery(
            body=request_body(requester),
            user_id=user_id,
            app_id="svc",
            type=REQUEST_MESSAGE_TYPE,
        )
    )


def test_a_burst_then_the_rate(clock: FakeClock) -> None:
    """`burst` requests at once, then `rate_per_s`; the rest dropped and counted."""
    limits = RequesterLimits(rate_per_s=2.0, burst=5, clock=clock)
    admitted = sum(limits.admit("svc-a", "client:a") for _ in range(100))
    assert (admitted, limits.dropped) == (5, 95)
    clock.advance(10)  # 20 more earned, but the bucket holds 5
    assert sum(limits.admit("svc-a", "client:a") for _ in range(100)) == 5
    clock.advance(1.0)
    assert sum(limits.admit("svc-a", "client:a") for _ in range(100)) == 2


def test_each_broker_user_has_its_own_allowance(clock: FakeClock) -> None:
    """One flooding login does not use up another's."""
    limits = RequesterLimits(rate_per_s=1.0, burst=3, clock=clock)
    for _ in range(50):
        limits.admit("attacker", "client:a")
    assert all(limits.admit("ops", "ops:alice@h") for _ in range(3))


def test_a_forged_requester_name_buys_nothing(clock: FakeClock) -> None:
    """The requester field is the sender's claim: a new name per request gets no new
    allowance; requests without a user_id share one."""
    limits = RequesterLimits(rate_per_s=1.0, burst=3, clock=clock)
    assert sum(limits.admit("svc", f"client:fake-{n}") for n in range(100)) == 3
    assert sum(limits.admit(None, f"client:fake-{n}") for n in range(100)) == 3
    assert RequesterLimits.identity(None) == UNVERIFIED
    assert RequesterLimits.identity("svc") == "user:svc"


def test_drops_are_logged_once_a_minute(clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    """A flood makes one warning a minute, with the count dropped since the last one (one
    line for every allowance together: there is one per login, app and kind)."""
    limits = RequesterLimits(rate_per_s=1.0, burst=1, clock=clock)
    with caplog.at_level(logging.INFO):
        for _ in range(150):
            for _ in range(100):
                limits.admit("attacker", "client:evil")
            clock.advance(1)
    lines = [r.getMessage() for r in caplog.records]
    assert 2 <= len(lines) <= 4
    assert "user:attacker" in lines[0]
    assert "more like it since the last such line" in lines[1]


def test_the_listener_drops_over_the_limit_and_logs_nothing_per_request(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Over the allowance a request never reaches the refreshers; admitted ones are not
    logged at INFO either (a flood must not flood the log)."""
    got: list[RefreshRequest] = []
    target = listener(RequesterLimits(rate_per_s=1.0, burst=4, clock=clock), got)
    with caplog.at_level(logging.INFO):
        for _ in range(1000):
            deliver(target, "wxtoken-consumer")
    deliver(target, "wxtoken-ops", requester="ops:alice@h")
    assert len(got) == 5
    assert got[-1].requester == "ops:alice@h"
    assert (target.stats.received, target.stats.dropped) == (1001, 996)
    assert len(caplog.records) == 1


def test_floods_about_many_apps_still_make_one_line_a_minute(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Over the allowance of 1,000 credentials at once: one line, not one per allowance."""
    limits = RequesterLimits(rate_per_s=1.0, burst=1, clock=clock)
    with caplog.at_level(logging.INFO):
        for n in range(1000):
            for _ in range(3):
                limits.admit("attacker", "client:evil", about=f"wx{n:04d}/access_token")
    assert limits.dropped == 2000
    assert len(caplog.records) == 1


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError, match="rate_per_s must be positive"):
        RequesterLimits(rate_per_s=0, burst=1)
    with pytest.raises(ValueError, match="rate_per_s must be positive"):
        RequesterLimits(rate_per_s=1, burst=0)
