"""How many refreshes requests may cause per app, following WeChat's limits.

A forced stable refresh (`force_refresh=true`) is allowed at most `forced_per_day` times a
UTC day and `forced_min_interval_s` apart; classic fetches count against `classic_per_day`.
The count is shared by every producer through Redis, checked and spent atomically in one
Lua script, on the keys `KeyLayout.budget_count` (spends that UTC day) and
`KeyLayout.budget_last_forced` (last forced refresh, UNIX milliseconds) name.
`KeyLayout.budget_spend` keeps one spend's answer for 10 minutes, so a replayed script (a
retry after a lost reply) spends nothing.

Refreshes caused by refresh requests have a second, smaller budget of their own
(`try_spend_requested`: `requested_per_day`, default 50, and a spacing of 60 s, 30 s for
stable apps), counted by the same script on the `KeyLayout.requested_*` keys, so a flood of
requests can never take the quota the scheduled refreshes need.

With Redis away the count goes on in memory from the last count Redis gave
(`_local_budget`), the decision says so in its `reason`, and the spends made meanwhile are
added to Redis once it answers.
`try_spend()` counts the fetch it allows; `record_fetch()` counts one nobody asked about
(the scheduled classic fetches, which use the same daily quota upstream). A ticket's
report-caused refreshes have their own count per kind (`try_spend_ticket`, the `api` part
of the keys is the kind, e.g. `jsapi_ticket`), with the forced limits: they never spend
the access token's budget, so a ticket report cannot use up the token's forced refreshes
or hold its next one back by the spacing. Never raises.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import redis

from consumer_lib.outage import OutageLog
from consumer_lib.redis_errors import REDIS_ERRORS, describe_redis_error
from consumer_lib.wire.keys import KeyLayout
from consumer_lib.wire.kinds import TokenKind
from producer.apps import TokenApi
from producer.limits.local_budget import LocalCount, decision_reason, refused_until_s
from producer.store.functions import FunctionLibrary

log = logging.getLogger(__name__)

#: Day counters outlive their day by one, so a clock slightly off still finds them.
COUNT_TTL_S = 2 * 86_400
#: A stable app's request-caused refreshes keep this much more than the forced spacing.
STABLE_MARGIN_MS = 1000
#: Redis away, or an answer that is not the script's: either way, count in memory.
_FAILURES: tuple[type[Exception], ...] = (*REDIS_ERRORS, ValueError, TypeError, IndexError)


def budget_day(now_s: float) -> str:
    """The UTC calendar day of `now_s` as `YYYYMMDD`: WeChat counts per day."""
    return datetime.fromtimestamp(now_s, UTC).strftime("%Y%m%d")


def budget_count_key(keys: KeyLayout, app_id: str, token_api: str, day: str) -> str:
    """The counter of refreshes of `app_id` through `token_api` on UTC day `day`."""
    return keys.budget_count(app_id, token_api, day)


def budget_spend_key(keys: KeyLayout, app_id: str, token_api: str, spend_id: str) -> str:
    """Where the answer of one spend is kept for a while, so a replay spends nothing."""
    return keys.budget_spend(app_id, token_api, spend_id)


def budget_last_forced_key(keys: KeyLayout, app_id: str, token_api: str) -> str:
    """When `app_id`'s last forced refresh through `token_api` was spent, in ms."""
    return keys.budget_last_forced(app_id, token_api)


#: The key builders of one count: (day counter, last spend, one spend's answer).
_KeysOf = tuple[
    Callable[[str, str, str], str], Callable[[str, str], str], Callable[[str, str, str], str]
]


@dataclass(frozen=True)
class BudgetDecision:
    """Whether a refresh may go upstream now, why, and the day's count against its limit."""

    allowed: bool
    reason: str
    used_today: int
    limit: int
    #: When a refused spend may succeed (UNIX s); None when allowed.
    refused_until_s: float | None = None


class RefreshBudget:
    """Per-app budget of request-caused refreshes, shared fleet-wide through Redis."""

    def __init__(  # noqa: PLR0913 - keyword-only: WeChat's limits, each defaulted
        self,
        redis_client: redis.Redis,
        keys: KeyLayout,
        *,
        clock: Callable[[], float] = time.time,
        forced_per_day: int = 20,
        forced_min_interval_s: float = 30.0,
        classic_per_day: int = 2000,
        new_spend_id: Callable[[], str] = lambda: uuid.uuid4().hex,
        requested_per_day: int = 50,
        requested_min_interval_s: float = 60.0,
    ) -> None:
        if min(forced_per_day, classic_per_day, forced_min_interval_s, requested_per_day) < 0:
            raise ValueError("budget limits must not be negative")
        if requested_min_interval_s < 0:
            raise ValueError("budget limits must not be negative")
        self._requested_per_day = requested_per_day
        self._requested_gap_ms = math.ceil(requested_min_interval_s * 1000)
        self._keys_of: dict[str, _KeysOf] = {
            "budget": (keys.budget_count, keys.budget_last_forced, keys.budget_spend),
            "requested": (keys.requested_count, keys.requested_last, keys.requested_spend),
        }
        self._keys = keys
        self._clock = clock
        self._forced_per_day = forced_per_day
        self._forced_min_interval_ms = math.ceil(forced_min_interval_s * 1000)
        self._classic_per_day = classic_per_day
        self._script = FunctionLibrary(redis_client).function("budget_spend")
        #: Keyed by app and the `api` of the keys: a `TokenApi`, or a ticket's kind.
        self._local: dict[tuple[str, str], LocalCount] = {}
        self._local_requested: dict[tuple[str, str], LocalCount] = {}
        self._lock = threading.Lock()
        self._outage = OutageLog(log, "Redis (refresh budget)", meanwhile="counting in memory")
        self._new_spend_id = new_spend_id

    def try_spend(self, app_id: str, token_api: TokenApi) -> BudgetDecision:
        """Spend one refresh of `app_id` if the day's count and spacing allow it."""
        if token_api is TokenApi.STABLE:
            limit, gap_ms, what = self._forced_per_day, self._forced_min_interval_ms, "forced"
        else:
            limit, gap_ms, what = self._classic_per_day, 0, "classic"
        return self._spend(app_id, token_api, limit=limit, gap_ms=gap_ms, what=what)

    def try_spend_requested(
        self, app_id: str, token_api: TokenApi, *, verified: bool = False
    ) -> BudgetDecision:
        """Spend one request-caused refresh of `app_id` from its own daily cap, spaced
        `requested_min_interval_s` apart (a stable app's: WeChat's 30 s plus a second,
        verified or not); a refusal the producer `verified` upstream skips the spacing,
        never the cap. The refresh also
        spends `try_spend` (WeChat's own limits): call both."""
        if token_api is TokenApi.STABLE:
            # WeChat's own 30 s, and a second more: checked first, this count must never let
            # a refresh through that the forced count then refuses (each would spend one).
            gap_ms = self._forced_min_interval_ms + STABLE_MARGIN_MS
        else:
            gap_ms = 0 if verified else self._requested_gap_ms
        return self._spend(
            app_id,
            token_api,
            limit=self._requested_per_day,
            gap_ms=gap_ms,
            what="request-caused",
            pool="requested",
        )

    def try_spend_ticket(self, app_id: str, kind: TokenKind) -> BudgetDecision:
        """Spend one report-caused refresh of ticket `kind` of `app_id`: its own count (the
        forced limits: `forced_per_day`, `forced_min_interval_s` apart), not the token's."""
        if kind is TokenKind.ACCESS_TOKEN:
            raise ValueError("the access token spends through try_spend")
        return self._spend(
            app_id,
            kind.value,
            limit=self._forced_per_day,
            gap_ms=self._forced_min_interval_ms,
            what=f"{kind} report",
        )

    def record_fetch(self, app_id: str, token_api: TokenApi) -> None:
        """Count a classic fetch that no `try_spend` allowed (a scheduled refresh).

        Normal-mode stable fetches are not limited by the forced budget: a no-op for them.
        """
        if token_api is TokenApi.CLASSIC:
            self._spend(app_id, token_api, limit=-1, gap_ms=0, what="classic")

    def used_today(self) -> list[tuple[str, str, int, int]]:
        """(app, api, used, limit) of today as this process last saw them (no I/O): for
        metrics; `api` is a `TokenApi` value or a ticket's kind. Apps this process has not
        counted for today are absent."""
        day = budget_day(self._clock())
        with self._lock:
            return [
                (app_id, api, local.used, self._limit_of(api))
                for (app_id, api), local in self._local.items()
                if local.day == day
            ]

    def _limit_of(self, api: str) -> int:
        classic = api in (TokenApi.CLASSIC, TokenApi.WECOM)  # else stable, or a ticket's kind
        return self._classic_per_day if classic else self._forced_per_day

    # ------------------------------------------------------------------ internals
    def _spend(
        self,
        app_id: str,
        token_api: str,
        *,
        limit: int,
        gap_ms: int,
        what: str,
        pool: str = "budget",
    ) -> BudgetDecision:
        now_s = self._clock()
        now_ms = math.floor(now_s * 1000)
        day = budget_day(now_s)
        shown_limit = self._classic_per_day if limit < 0 else limit
        count_key, last_key, spend_key = self._keys_of[pool]
        locals_ = self._local if pool == "budget" else self._local_requested
        with self._lock:
            local = locals_.get((app_id, token_api))
            if local is None or local.day != day:
                local = locals_[(app_id, token_api)] = LocalCount.of_day(day, local)
            try:
                # A fresh id per spend: redis-py retries a call whose reply was lost with the
                # same arguments, and the script answers a known id without spending again.
                reply = self._script(
                    keys=[
                        count_key(app_id, token_api, day),
                        last_key(app_id, token_api),
                        spend_key(app_id, token_api, self._new_spend_id()),
                    ],
                    args=[
                        limit,
                        now_ms,
                        gap_ms,
                        COUNT_TTL_S,
                        local.unsynced,
                        local.unsynced_last_ms,
                    ],
                )
                allowed, used, last_ms = (int(reply[0]) == 1), int(reply[1]), int(reply[2])
            except _FAILURES as exc:
                return self._spend_locally(
                    local,
                    limit=limit,
                    gap_ms=gap_ms,
                    what=what,
                    now_ms=now_ms,
                    shown_limit=shown_limit,
                    error=describe_redis_error(exc),
                )
            self._outage.succeeded()
            local.used, local.last_ms = used, max(local.last_ms, last_ms)
            local.unsynced = local.unsynced_last_ms = 0
            reason = decision_reason(
                allowed, what, used=used, limit=limit, last_ms=last_ms, gap_ms=gap_ms, now_ms=now_ms
            )
            until_s = refused_until_s(allowed, used, limit, last_ms, gap_ms, now_ms)
            return BudgetDecision(allowed, reason, used, shown_limit, until_s)

    def _spend_locally(
        self,
        local: LocalCount,
        *,
        limit: int,
        gap_ms: int,
        what: str,
        now_ms: int,
        shown_limit: int,
        error: str,
    ) -> BudgetDecision:
        self._outage.failed(error)
        allowed = local.spend(limit=limit, gap_ms=gap_ms, now_ms=now_ms)
        reason = decision_reason(
            allowed,
            what,
            used=local.used,
            limit=limit,
            last_ms=local.last_ms,
            gap_ms=gap_ms,
            now_ms=now_ms,
        )
        reason = f"{reason} (Redis unreachable, counted in memory: {error})"
        until_s = refused_until_s(allowed, local.used, limit, local.last_ms, gap_ms, now_ms)
        return BudgetDecision(allowed, reason, local.used, shown_limit, until_s)
