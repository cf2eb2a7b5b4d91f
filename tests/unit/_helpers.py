"""Small builders shared by the unit tests (not a test module itself)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import fakeredis
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from consumer_lib import TokenKind, TokenSource, TokenUpdate

#: The FakeClock's starting point (see tests/conftest.py).
T0 = 1_800_000_000.0


def make_update(
    *,
    app_id: str = "wxapp1",
    value: str = "TOKEN-aaaaaaaaaaaaaaaaaaaa-0001",
    version: int = 1,
    issued_at: float = T0,
    lifetime_s: float = 7200.0,
    source: TokenSource = TokenSource.REFRESH,
    kind: TokenKind = TokenKind.ACCESS_TOKEN,
    **extra: Any,
) -> TokenUpdate:
    """A valid update, `lifetime_s` long from `issued_at`."""
    return TokenUpdate(
        app_id=app_id,
        kind=kind,
        value=value,
        issued_at=issued_at,
        expires_at=issued_at + lifetime_s,
        version=version,
        source=source,
        producer_id=extra.pop("producer_id", "test-producer"),
        **extra,
    )


class CountingRedis(fakeredis.FakeRedis):
    """fakeredis that lists the commands sent through it, each with its first argument
    ("FCALL wxtoken_store_compare_and_set"): outside a pipeline, one is one round trip."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[str] = []

    def execute_command(self, *args: Any, **options: Any) -> Any:
        self.sent.append(" ".join(str(a) for a in args[:2]))
        return super().execute_command(*args, **options)


def unreachable_redis() -> redis.Redis:
    """A client for a local port nobody listens on: refused at once, no retries."""
    return redis.Redis(port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))


def redis_on_clock(clock: Callable[[], float]) -> fakeredis.FakeRedis:
    """fakeredis whose `TIME` reads `clock` (the test's), so a skew check sees no skew."""
    client = fakeredis.FakeRedis()

    def time_of_clock() -> tuple[int, int]:
        now_s = clock()
        whole = math.floor(now_s)
        return whole, round((now_s - whole) * 1e6)

    client.time = time_of_clock  # type: ignore[method-assign]
    return client
