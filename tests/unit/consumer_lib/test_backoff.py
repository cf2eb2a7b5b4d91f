"""`Backoff`: capped exponential growth with jitter, and reset after success."""

from __future__ import annotations

import random

import pytest

from consumer_lib.backoff import Backoff


def test_ceiling_doubles_per_failure() -> None:
    """With the jitter at its top, delays double from the base: 1, 2, 4, 8."""
    backoff = Backoff(1.0, 100.0, rand=lambda: 1.0)
    assert [backoff.next_delay_s() for _ in range(4)] == [1.0, 2.0, 4.0, 8.0]


def test_delay_is_capped() -> None:
    """Delays stop growing at the cap, however many failures follow."""
    backoff = Backoff(1.0, 10.0, rand=lambda: 1.0)
    delays = [backoff.next_delay_s() for _ in range(200)]
    assert delays[:5] == [1.0, 2.0, 4.0, 8.0, 10.0]
    assert set(delays[4:]) == {10.0}


def test_lowest_jitter_is_half_the_ceiling() -> None:
    """With the jitter at its bottom, each delay is half its ceiling."""
    backoff = Backoff(2.0, 100.0, rand=lambda: 0.0)
    assert [backoff.next_delay_s() for _ in range(3)] == [1.0, 2.0, 4.0]


def test_jitter_stays_within_half_and_full_ceiling() -> None:
    """With random jitter every delay lies in [ceiling/2, ceiling] of its attempt."""
    rng = random.Random(1234)
    backoff = Backoff(0.5, 30.0, rand=rng.random)
    for attempt in range(40):
        ceiling = min(30.0, 0.5 * 2**attempt)
        delay = backoff.next_delay_s()
        assert ceiling / 2 <= delay <= ceiling


def test_jitter_spreads_retries() -> None:
    """Two backoffs with different random sources do not retry in lockstep."""
    a = Backoff(1.0, 60.0, rand=random.Random(1).random)
    b = Backoff(1.0, 60.0, rand=random.Random(2).random)
    assert [a.next_delay_s() for _ in range(5)] != [b.next_delay_s() for _ in range(5)]


def test_reset_starts_over_from_base() -> None:
    """After `reset()` the next delay is the base again and attempts are zero."""
    backoff = Backoff(1.0, 100.0, rand=lambda: 1.0)
    for _ in range(5):
        backoff.next_delay_s()
    assert backoff.attempts == 5
    backoff.reset()
    assert backoff.attempts == 0
    assert backoff.next_delay_s() == 1.0


def test_many_failures_do_not_overflow() -> None:
    """Thousands of failures still give the cap, not an overflow."""
    backoff = Backoff(1.0, 3600.0, rand=lambda: 1.0)
    for _ in range(5000):
        delay = backoff.next_delay_s()
    assert delay == 3600.0


def test_base_equal_to_cap_is_constant() -> None:
    """A backoff whose base is its cap always waits the same ceiling."""
    backoff = Backoff(5.0, 5.0, rand=lambda: 1.0)
    assert {backoff.next_delay_s() for _ in range(10)} == {5.0}


@pytest.mark.parametrize(("base", "cap"), [(0.0, 1.0), (-1.0, 1.0), (2.0, 1.0)])
def test_bad_arguments_are_refused(base: float, cap: float) -> None:
    """A non-positive base or a cap below the base is a programming error."""
    with pytest.raises(ValueError, match="base_s"):
        Backoff(base, cap)
