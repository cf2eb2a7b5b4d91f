"""The one token bucket behind every rate limit: burst, refill, never below zero, retuning,
and the three limits that spend from it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from producer.limits.bucket import TokenBucket

ROOT = Path(__file__).resolve().parents[4]


def test_a_full_burst_then_nothing() -> None:
    """A new bucket holds `burst` tokens; the next take at the same instant is refused."""
    bucket = TokenBucket(rate_per_s=2, burst=3)
    assert [bucket.try_take(100.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.wait_s(100.0) == pytest.approx(0.5)


def test_it_refills_at_the_rate_up_to_the_burst() -> None:
    """Time given refills rate_per_s tokens a second, never more than the burst."""
    bucket = TokenBucket(rate_per_s=2, burst=3)
    assert all(bucket.try_take(100.0) for _ in range(3))
    assert bucket.wait_s(100.25) == pytest.approx(0.25)
    assert bucket.try_take(100.5)
    assert not bucket.try_take(100.5)
    assert bucket.tokens(1000.0) == 3.0


def test_a_refused_take_spends_nothing_and_tokens_never_go_negative() -> None:
    """Refusals leave the tokens as they were, so the wait does not grow with the refusals."""
    bucket = TokenBucket(rate_per_s=1, burst=1)
    assert bucket.try_take(10.0)
    for _ in range(100):
        assert not bucket.try_take(10.5)
    assert bucket.tokens(10.5) == pytest.approx(0.5)
    assert bucket.wait_s(10.5) == pytest.approx(0.5)
    assert bucket.try_take(11.0)


def test_time_running_backwards_refills_nothing() -> None:
    """A clock stepping back neither adds nor removes tokens, nor counts the same time twice."""
    bucket = TokenBucket(rate_per_s=1, burst=5)
    assert all(bucket.try_take(100.0) for _ in range(5))
    assert not bucket.try_take(90.0)
    assert bucket.tokens(90.0) == 0.0
    assert bucket.tokens(101.0) == pytest.approx(1.0)


def test_taking_several_tokens_at_once() -> None:
    """`n` tokens are taken together or not at all; more than the burst is an error."""
    bucket = TokenBucket(rate_per_s=1, burst=4)
    assert bucket.try_take(0.0, n=3)
    assert not bucket.try_take(0.0, n=2)
    assert bucket.wait_s(0.0, n=2) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="cannot take"):
        bucket.try_take(0.0, n=5)


def test_a_retune_refills_the_past_at_the_old_rate() -> None:
    """Time before a rate change refills at the old rate; the new burst caps what is held."""
    bucket = TokenBucket(rate_per_s=1, burst=10)
    assert all(bucket.try_take(0.0) for _ in range(10))
    bucket.retune(4.0, rate_per_s=100, burst=200)
    assert bucket.tokens(4.0) == pytest.approx(4.0)
    assert bucket.tokens(4.5) == pytest.approx(54.0)
    bucket.retune(5.0, rate_per_s=1, burst=2)
    assert bucket.tokens(5.0) == 2.0
    assert bucket.rate_per_s == 1.0
    assert bucket.burst == 2.0


@pytest.mark.parametrize(
    ("rate_per_s", "burst"), [(0, 1), (-1, 1), (float("inf"), 1), (float("nan"), 1), (1, 0.5)]
)
def test_bad_numbers_are_refused(rate_per_s: float, burst: float) -> None:
    with pytest.raises(ValueError, match="must be"):
        TokenBucket(rate_per_s, burst)


def test_it_imports_only_the_standard_library() -> None:
    """The gateway imports it, so it must pull in nothing of the producer's dependencies."""
    tree = ast.parse((ROOT / "producer" / "limits" / "bucket.py").read_text())
    imported = {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert {name.partition(".")[0] for name in imported} <= {"__future__", "math"}


@pytest.mark.parametrize(
    "path",
    ["producer/upstream/gate.py", "producer/limits/requesters.py", "ops/gateway/_ratelimit.py"],
)
def test_every_rate_limit_spends_from_the_one_bucket(path: str) -> None:
    """The three rate limits use `TokenBucket` and keep no refill arithmetic of their own."""
    source = (ROOT / path).read_text()
    assert "from producer.limits.bucket import TokenBucket" in source
    assert "min(" not in source  # the refill's cap at the burst, written in each before
