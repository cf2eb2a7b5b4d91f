"""The refresh budget's count as this process knows it, and the words of its decisions.

`RefreshBudget` keeps one `LocalCount` per app and API: the last count Redis gave, and,
while Redis is away, the count in memory (`spend`) with the spends Redis has not seen yet,
which the next script call adds there. `decision_reason` says why a spend was allowed or
refused, in Redis or in memory alike.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class LocalCount:
    """One app and API's count as this process knows it, for when Redis is away."""

    day: str
    used: int = 0
    last_ms: int = 0
    unsynced: int = 0  # spends and fetches made while Redis was away
    unsynced_last_ms: int = 0

    @classmethod
    def of_day(cls, day: str, previous: LocalCount | None) -> LocalCount:
        """A new day starts from zero; the spacing of forced refreshes carries over."""
        previous = previous or cls(day)
        return cls(day, last_ms=previous.last_ms, unsynced_last_ms=previous.unsynced_last_ms)

    def spend(self, *, limit: int, gap_ms: int, now_ms: int) -> bool:
        """Spend one in memory if the count and spacing allow it (`limit` < 0: record one
        fetch, always allowed); True if spent."""
        allowed = limit < 0 or (
            self.used < limit and (gap_ms <= 0 or abs(now_ms - self.last_ms) >= gap_ms)
        )
        if allowed:
            self.used += 1
            self.unsynced += 1
            if gap_ms > 0:
                self.last_ms = self.unsynced_last_ms = now_ms
        return allowed


def refused_until_s(
    allowed: bool, used: int, limit: int, last_ms: int, gap_ms: int, now_ms: int
) -> float | None:
    """When a refused spend may succeed (UNIX s): the spacing's end, or the next UTC day
    once the day's limit is reached; None when it was allowed or only recorded."""
    if allowed or limit < 0:
        return None
    if used >= limit:
        day_s = 86_400
        return (now_ms // 1000 // day_s + 1) * day_s
    return (max(last_ms, now_ms - gap_ms) + gap_ms) / 1000


def decision_reason(
    allowed: bool, what: str, *, used: int, limit: int, last_ms: int, gap_ms: int, now_ms: int
) -> str:
    """Why a spend of `what` was allowed or refused, or that a fetch was recorded."""
    if limit < 0:
        return f"{what} fetch recorded, {used} today"
    if allowed:
        return f"{what} refresh {used} of {limit} today"
    if used >= limit:
        return f"daily limit of {limit} {what} refreshes reached (until 00:00 UTC)"
    ago_s = abs(now_ms - last_ms) / 1000
    again_s = max(0.0, gap_ms / 1000 - ago_s)
    return (
        f"last {what} refresh {ago_s:.1f} s ago, less than {gap_ms / 1000:g} s "
        f"(again in {again_s:.0f} s)"
    )
