"""An unchanged token keeps its first expiry and is fetched again right at it."""

from __future__ import annotations

from producer.refresh.renewal import judge_fetch
from producer.upstream.errors import FetchedToken

T0 = 1_800_000_000.0


def test_new_value_expires_from_the_request_and_refetches_at_the_margin() -> None:
    """A value not held before is new: expiry from the answer, next fetch a margin earlier."""
    renewal = judge_fetch(
        FetchedToken("NEW", 7200),
        requested_at_s=T0,
        held_value="OLD",
        held_expires_at_s=T0 + 300,
        margin_s=300,
    )
    assert (renewal.changed, renewal.expires_at_s, renewal.refetch_at_s) == (
        True,
        T0 + 7200,
        T0 + 6900,
    )


def test_unchanged_value_keeps_its_expiry_and_refetches_at_it() -> None:
    """WeCom's same token with a shrinking expires_in is no new token: the original expiry
    stands and the next fetch is at that expiry, not ever closer margins before it."""
    renewal = judge_fetch(
        FetchedToken("SAME", 299),
        requested_at_s=T0 + 6900.4,
        held_value="SAME",
        held_expires_at_s=T0 + 7200,
        margin_s=300,
    )
    assert renewal.changed is False
    assert renewal.expires_at_s == T0 + 7199.4  # the answer's, a little earlier, wins
    assert renewal.refetch_at_s == renewal.expires_at_s


def test_unchanged_value_never_gains_life() -> None:
    """An answer promising the same token a longer life does not extend the held expiry."""
    renewal = judge_fetch(
        FetchedToken("SAME", 7200),
        requested_at_s=T0 + 100,
        held_value="SAME",
        held_expires_at_s=T0 + 7200,
        margin_s=300,
    )
    assert renewal.expires_at_s == T0 + 7200


def test_unchanged_at_expiry_retries_shortly_not_in_a_loop() -> None:
    """Upstream lagging our clock returns the same token at its expiry: ask again shortly."""
    renewal = judge_fetch(
        FetchedToken("SAME", 1),
        requested_at_s=T0 + 7200,
        held_value="SAME",
        held_expires_at_s=T0 + 7200,
        margin_s=300,
        min_retry_s=0.5,
    )
    assert renewal.refetch_at_s == T0 + 7200.5


def test_nothing_held_is_new() -> None:
    """With nothing held every value is new; a tiny lifetime still waits min_retry_s."""
    renewal = judge_fetch(
        FetchedToken("A", 2),
        requested_at_s=T0,
        held_value=None,
        held_expires_at_s=None,
        margin_s=300,
    )
    assert renewal.changed is True
    assert renewal.refetch_at_s == T0 + 1.0
