"""Issue 18 item 13: `InvalidReporter` forgets reported tokens in amortised O(1), and keeps
at most `max_tracked` of them."""

from __future__ import annotations

import pytest

from consumer_lib._client.reporting import REPORT_EVERY_S, InvalidReporter
from consumer_lib.wire.update import TokenKind
from tests.conftest import FakeClock

APP = "wxapp1"


class Sends:
    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    def __call__(self, exchange: str, body: bytes, message_type: str) -> bool:
        self.bodies.append(body)
        return True


def never_read(app_id: str, kind: TokenKind) -> None:
    raise AssertionError("the broker is up: no snapshot read")


def report(reporter: InvalidReporter, sends: Sends, token: str) -> bool:
    """True when the report went out (`ReportOutcome.reported`)."""
    return reporter.report(
        APP,
        token,
        TokenKind.ACCESS_TOKEN,
        held=None,
        reason=None,
        send=sends,
        read_snapshot=never_read,
    ).reported


@pytest.fixture
def steady() -> FakeClock:
    return FakeClock(1000.0)


def test_a_token_is_reported_again_once_its_time_is_up(clock: FakeClock, steady: FakeClock) -> None:
    """Within `REPORT_EVERY_S` a token is reported once; after it, again; the expired marks
    are gone from memory by then."""
    reporter, sends = InvalidReporter("wx.test", clock=clock, monotonic=steady), Sends()
    assert report(reporter, sends, "A" * 20)
    steady.advance(REPORT_EVERY_S - 0.5)
    assert not report(reporter, sends, "A" * 20)
    assert report(reporter, sends, "B" * 20)
    steady.advance(0.5)
    assert report(reporter, sends, "A" * 20)
    assert len(sends.bodies) == 3
    steady.advance(REPORT_EVERY_S)
    assert report(reporter, sends, "C" * 20)
    assert len(reporter) == 1  # A and B expired and were dropped


def test_many_tokens_are_forgotten_as_they_expire(clock: FakeClock, steady: FakeClock) -> None:
    """30,000 distinct tokens reported over a minute: each goes out once, and no more than
    the last `REPORT_EVERY_S`'s worth is remembered at any time."""
    reporter, sends = InvalidReporter("wx.test", clock=clock, monotonic=steady), Sends()
    most = 0
    for n in range(30_000):
        assert report(reporter, sends, f"TOKEN-{n:06d}")
        steady.advance(60 / 30_000)
        most = max(most, len(reporter))
    assert len(sends.bodies) == 30_000
    assert most <= 15_001
    assert len(reporter) <= 15_001


def test_at_most_max_tracked_are_kept_oldest_first_out(clock: FakeClock, steady: FakeClock) -> None:
    """Past the cap the oldest mark goes: that token may be reported again early (the
    leader coalesces it), the newer ones are still held back."""
    reporter = InvalidReporter("wx.test", clock=clock, monotonic=steady, max_tracked=3)
    sends = Sends()
    for token in ("A" * 20, "B" * 20, "C" * 20, "D" * 20):
        assert report(reporter, sends, token)
        steady.advance(1)
    assert len(reporter) == 3
    assert report(reporter, sends, "A" * 20)  # evicted by D: out again
    assert not report(reporter, sends, "D" * 20)
    assert not report(reporter, sends, "C" * 20)
    assert len(reporter) == 3
    with pytest.raises(ValueError, match="max_tracked"):
        InvalidReporter("wx.test", clock=clock, max_tracked=0)
