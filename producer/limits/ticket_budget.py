"""WeCom's hourly ticket limits, counted fleet-wide: 400 ticket calls an hour per corp and
100 an hour per agent (per ticket kind), whichever producer makes them.

Every call counts, the repeated answers too. Counted in Redis sorted sets of call times,
checked and spent atomically in one Lua script over a rolling hour:

{prefix}:ticket_budget:corp:{corp_id}                       corp tickets of the corp
{prefix}:ticket_budget:agent:{corp_id}/{agent_id}:{kind}    that agent's calls of one kind

A corp ticket spends from both its corp's and its agent's count, an agent ticket from its
agent's. With Redis away the count goes on in this process's memory (the leader is the
only fetcher), and the decision says so. Never raises.
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import redis

from consumer_lib.outage import OutageLog
from consumer_lib.redis_errors import REDIS_ERRORS, describe_redis_error
from consumer_lib.wire.keys import KeyLayout
from consumer_lib.wire.kinds import TokenKind
from producer.app_config import AppConfig
from producer.store.functions import FunctionLibrary

log = logging.getLogger(__name__)

HOUR_MS = 3_600_000
_FAILURES: tuple[type[Exception], ...] = (*REDIS_ERRORS, ValueError, TypeError, IndexError)


@dataclass(frozen=True)
class TicketBudgetDecision:
    """Whether a WeCom ticket call may go upstream now; if not, when it may."""

    allowed: bool
    reason: str
    retry_at_s: float | None = None


class TicketBudget:
    """WeCom's hourly ticket limits for every producer at once."""

    def __init__(
        self,
        redis_client: redis.Redis,
        keys: KeyLayout,
        *,
        clock: Callable[[], float] = time.time,
        corp_per_hour: int = 400,
        agent_per_hour: int = 100,
    ) -> None:
        if corp_per_hour < 0 or agent_per_hour < 0:
            raise ValueError("ticket limits must not be negative")
        self._keys, self._clock = keys, clock
        self._corp_per_hour, self._agent_per_hour = corp_per_hour, agent_per_hour
        self._script = FunctionLibrary(redis_client).function("ticket_budget_spend")
        self._local: dict[str, deque[int]] = {}
        self._lock = threading.Lock()
        self._sequence = itertools.count()
        self._outage = OutageLog(log, "Redis (ticket budget)", meanwhile="counting in memory")

    def _windows(self, app: AppConfig, kind: TokenKind) -> list[tuple[str, int, str]]:
        """(key, limit, what) of every window a call of `kind` spends from."""
        if app.corp_id is None or kind not in (
            TokenKind.CORP_JSAPI_TICKET,
            TokenKind.AGENT_CONFIG_TICKET,
        ):
            raise ValueError(f"{app.app_id}/{kind} is not a WeCom ticket")
        windows = [
            (
                self._keys.ticket_budget_agent(str(app.wecom_agent), kind),
                self._agent_per_hour,
                f"agent {app.wecom_agent}'s {kind} calls",
            )
        ]
        if kind is TokenKind.CORP_JSAPI_TICKET:
            corp = (
                self._keys.ticket_budget_corp(app.corp_id),
                self._corp_per_hour,
                f"corp {app.corp_id}",
            )
            windows.insert(0, corp)
        return windows

    def try_spend(self, app: AppConfig, kind: TokenKind) -> TicketBudgetDecision:
        """Spend one call of WeCom ticket `kind` for `app` if every window has room."""
        windows = self._windows(app, kind)
        now_ms = math.floor(self._clock() * 1000)
        member = f"{now_ms}:{id(self)}:{next(self._sequence)}"
        with self._lock:
            try:
                reply = self._script(
                    keys=[key for key, _, _ in windows],
                    args=[now_ms, HOUR_MS, member, *(limit for _, limit, _ in windows)],
                )
                allowed = int(reply[0]) == 1
                full = None if allowed else (int(reply[1]) - 1, int(reply[2]))
            except _FAILURES as exc:
                return self._spend_locally(windows, now_ms, describe_redis_error(exc))
            self._outage.succeeded()
        if full is None:
            return TicketBudgetDecision(True, f"{kind} call within WeCom's hourly limits")
        index, oldest_ms = full
        _, limit, what = windows[index]
        return TicketBudgetDecision(
            False,
            f"hourly limit of {limit} ticket calls reached for {what}",
            (oldest_ms + HOUR_MS) / 1000,
        )

    def _spend_locally(
        self, windows: list[tuple[str, int, str]], now_ms: int, error: str
    ) -> TicketBudgetDecision:
        self._outage.failed(error)
        events = []
        for key, limit, what in windows:
            window = self._local.setdefault(key, deque())
            while window and window[0] <= now_ms - HOUR_MS:
                window.popleft()
            if len(window) >= limit:
                return TicketBudgetDecision(
                    False,
                    f"hourly limit of {limit} ticket calls reached for {what} "
                    f"(Redis unreachable, counted in memory: {error})",
                    (window[0] + HOUR_MS) / 1000 if window else None,
                )
            events.append(window)
        for window in events:
            window.append(now_ms)
        return TicketBudgetDecision(
            True,
            f"ticket call within hourly limits (Redis unreachable, counted in memory: {error})",
        )
