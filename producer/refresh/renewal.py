"""Judging a fresh fetch against the credential held: new, or the same one back.

WeCom's gettoken returns the *same* token while it is valid, with a shrinking
``expires_in``; WeChat's stable_token does the same in normal mode, and a ticket call may
too. Taking an unchanged value for a new one with a short life would re-fetch ever faster
towards its expiry. So an unchanged value keeps the expiry it was first given (never a
later one), publishes nothing new, and is fetched again right at that expiry (when
upstream hands out its successor), not at a margin before it.
"""

from __future__ import annotations

from dataclasses import dataclass

from producer.upstream.errors import FetchedToken


@dataclass(frozen=True)
class Renewal:
    """What to do with a fetch: publish it or not, its expiry, when to fetch next."""

    changed: bool
    expires_at_s: float
    refetch_at_s: float


def judge_fetch(
    fetched: FetchedToken,
    *,
    requested_at_s: float,
    held_value: str | None,
    held_expires_at_s: float | None,
    margin_s: float,
    min_retry_s: float = 1.0,
) -> Renewal:
    """`fetched` (asked for at `requested_at_s`) against the held value and expiry.

    A new value expires `expires_in_s` after the request and is refetched `margin_s`
    before that. An unchanged one keeps the held expiry (or the answer's, if earlier) and
    is refetched at that expiry, but no sooner than `min_retry_s` from now, so an upstream
    whose clock lags ours gets asked again shortly rather than in a tight loop.
    """
    answer_expires_at_s = requested_at_s + fetched.expires_in_s
    if held_value is not None and fetched.value == held_value:
        held = answer_expires_at_s if held_expires_at_s is None else held_expires_at_s
        expires_at_s = min(held, answer_expires_at_s)
        return Renewal(False, expires_at_s, max(expires_at_s, requested_at_s + min_retry_s))
    refetch_at_s = max(answer_expires_at_s - margin_s, requested_at_s + min_retry_s)
    return Renewal(True, answer_expires_at_s, refetch_at_s)
