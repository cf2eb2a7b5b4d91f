"""The sandbox's bookkeeping: issued tokens and tickets, rolling-window limits, call counts.

Nothing here locks; `SandboxState` holds one lock around every use.
"""

from __future__ import annotations

import secrets
from collections import Counter, deque
from dataclasses import dataclass


def new_secret_string() -> str:
    """A random url-safe string of 120-159 characters, like WeChat's tokens and tickets."""
    return secrets.token_urlsafe(90 + secrets.randbelow(30))


@dataclass
class TokenRecord:
    """An access token: whose (an appid or a WeCom agent key), on which platform, how long."""

    owner: str
    platform: str  # "wechat" or "wecom"
    expires_at: float
    valid_until: float  # lowered when superseded or invalidated early

    def alive(self, now: float) -> bool:
        return now < self.expires_at and now < self.valid_until


@dataclass
class TicketRecord:
    """A ticket, and the access token that fetched it."""

    owner: str
    ticket_type: str
    expires_at: float
    fetched_with: str


class TokenBook:
    """Every token handed out, forgetting dead ones now and then (amortised)."""

    def __init__(self) -> None:
        self._tokens: dict[str, TokenRecord] = {}
        self._prune_at = 1024

    def issue(self, owner: str, platform: str, now: float, lifetime_s: float) -> str:
        if len(self._tokens) >= self._prune_at:
            self._tokens = {k: t for k, t in self._tokens.items() if t.alive(now)}
            self._prune_at = max(1024, 2 * len(self._tokens))
        token = new_secret_string()
        self._tokens[token] = TokenRecord(owner, platform, now + lifetime_s, now + lifetime_s)
        return token

    def get(self, token: str | None) -> TokenRecord | None:
        return self._tokens.get(token or "")

    def values(self) -> list[str]:
        """Every token still on record (dead ones go at the next prune)."""
        return list(self._tokens)


class TicketBook:
    """Tickets by value, and the current one of each (owner, type)."""

    def __init__(self) -> None:
        self._tickets: dict[str, TicketRecord] = {}
        self.current: dict[tuple[str, str], str] = {}

    def current_of(self, owner: str, ticket_type: str) -> tuple[str, TicketRecord] | None:
        value = self.current.get((owner, ticket_type))
        return None if value is None else (value, self._tickets[value])

    def issue(
        self, owner: str, ticket_type: str, fetched_with: str, now: float, lifetime_s: float
    ) -> str:
        if len(self._tickets) > 4 * max(256, len(self.current)):
            live = set(self.current.values())
            self._tickets = {
                k: t for k, t in self._tickets.items() if k in live or t.expires_at > now
            }
        value = new_secret_string()
        self._tickets[value] = TicketRecord(owner, ticket_type, now + lifetime_s, fetched_with)
        self.current[(owner, ticket_type)] = value
        return value

    def get(self, value: str) -> TicketRecord | None:
        return self._tickets.get(value)


class RollingLimit:
    """At most ``limit`` events per key in any ``window_s``."""

    def __init__(self, limit: int, window_s: float) -> None:
        self.limit, self.window_s = limit, window_s
        self._events: dict[str, deque[float]] = {}

    def _trimmed(self, key: str, now: float) -> deque[float]:
        events = self._events.setdefault(key, deque())
        while events and events[0] <= now - self.window_s:
            events.popleft()
        return events

    def has_room(self, key: str, now: float) -> bool:
        return len(self._trimmed(key, now)) < self.limit

    def record(self, key: str, now: float) -> None:
        self._trimmed(key, now).append(now)

    def last(self, key: str, now: float) -> float | None:
        events = self._trimmed(key, now)
        return events[-1] if events else None

    def clear(self, key: str) -> None:
        self._events.pop(key, None)


class CallCounts:
    """Answered calls by endpoint and credential owner, for tests that count fetches."""

    def __init__(self) -> None:
        self._counts: dict[str, Counter[str]] = {}

    def add(self, endpoint: str, owner: str) -> None:
        self._counts.setdefault(endpoint, Counter())[owner] += 1

    def get(self, endpoint: str, owner: str) -> int:
        return self._counts.get(endpoint, Counter())[owner]

    def as_json(self) -> dict[str, dict[str, int]]:
        return {endpoint: dict(counts) for endpoint, counts in sorted(self._counts.items())}
