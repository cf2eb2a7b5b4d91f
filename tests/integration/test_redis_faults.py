"""Stray Redis writers and lost replies against the real local Redis: a squatted or broken
lease, a poisoned version key, and scripts replayed by redis-py's retry after their reply
was lost (tests/integration/tcp_proxy.py drops it after Redis has acted).

Figures are printed (`-s`), never asserted as timings.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator

import pytest
import redis

from consumer_lib.snapshot import connect_redis
from consumer_lib.wire.keys import KeyLayout
from consumer_lib.wire.update import TokenKind
from producer.apps import TokenApi
from producer.leadership.lease import Leadership
from producer.limits.budget import RefreshBudget, budget_count_key, budget_day
from producer.store.tokens import MAX_VERSION, TokenStore
from tests.unit._helpers import make_update
from tests.waiting import wait_for

from .tcp_proxy import TcpProxy, proxy_to

APP = "wxfaults00000001"
ACCESS = TokenKind.ACCESS_TOKEN


@pytest.fixture
def keys(isolation: dict[str, str]) -> KeyLayout:
    return KeyLayout(isolation["key_prefix"])


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    made = connect_redis(redis_url)
    yield made
    made.close()


# ---- item 2: a lease that never expires or cannot be parsed ----------------------------------


def _squat_plain(client: redis.Redis, key: str) -> None:
    client.set(key, "999999|squatter")  # no TTL: the attack of issue 8


def _squat_garbage(client: redis.Redis, key: str) -> None:
    client.set(key, "\x1b[2Jgarbage")


def _squat_wrong_type(client: redis.Redis, key: str) -> None:
    client.hset(key, "epoch", "1")


def _squat_for_a_day(client: redis.Redis, key: str) -> None:
    client.set(key, "5|squatter", px=86_400_000)


@pytest.mark.parametrize(
    "squat",
    [_squat_plain, _squat_garbage, _squat_wrong_type, _squat_for_a_day],
    ids=["no-ttl", "garbage", "wrong-type", "day-long-ttl"],
)
def test_a_broken_lease_is_replaced_within_one_ttl(
    client: redis.Redis,
    keys: KeyLayout,
    squat: Callable[[redis.Redis, str], None],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A lease without TTL, with garbage, of another type or with a day-long TTL is logged
    as broken, runs out within one lease TTL, and a producer then leads."""
    squat(client, keys.leader)
    client.set(keys.leader_epoch, "not-a-number")  # a poisoned epoch counter too
    lease = Leadership(
        client, lease_key=keys.leader, epoch_key=keys.leader_epoch, owner="p-fresh", ttl_s=1.0
    )
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="producer.leadership.lease"):
        wait_for(
            lambda: lease.tick() is not None and lease.is_leader,
            timeout_s=15,
            message="a producer to lead after the lease was squatted",
        )
    print(f"\nsquatted lease ({squat.__name__}): leading after {time.monotonic() - started:.2f} s")
    broken = [r for r in caplog.records if "broken value" in r.getMessage()]
    assert len(broken) == 1, "logged once"
    assert "\x1b" not in broken[0].getMessage(), "the value is escaped in the log"
    assert lease.epoch == 1
    lease.release()


# ---- item 4: version poison ------------------------------------------------------------------


@pytest.mark.parametrize(
    "poison", [str(2**53), str(2**53 - 1), "1e400", "garbage", str(2**63)], ids=str
)
def test_a_poisoned_version_key_is_repaired_before_any_fetch(
    client: redis.Redis, keys: KeyLayout, poison: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A version key at or above 2^53, far ahead of the clock, or garbage: the next
    allocation is a valid version (checked before the fetch), logged and written back."""
    client.set(keys.version(APP, ACCESS), poison)
    store = TokenStore(client, keys)
    now_s = time.time()
    with caplog.at_level(logging.WARNING, logger="producer.store.tokens"):
        version = store.next_version(APP, ACCESS, now_s=now_s)
    assert 0 < version <= MAX_VERSION
    assert version == int(now_s * 1000)
    assert client.get(keys.version(APP, ACCESS)) == str(version).encode(), "repaired"
    assert any("repaired" in r.getMessage() for r in caplog.records)
    update = make_update(app_id=APP, version=version, issued_at=now_s)  # validates
    assert store.write(update).written
    assert store.next_version(APP, ACCESS, now_s=now_s) == version + 1


def test_a_stored_token_with_a_poisoned_version_does_not_block_writes(
    client: redis.Redis, keys: KeyLayout
) -> None:
    """A stored value claiming version 2^60 is no version: a genuine write replaces it."""
    client.set(keys.token(APP, ACCESS), json.dumps({"version": 2**60, "value": "forged"}))
    store = TokenStore(client, keys)
    now_s = time.time()
    version = store.next_version(APP, ACCESS, now_s=now_s)
    assert version == int(now_s * 1000)
    update = make_update(app_id=APP, version=version, issued_at=now_s)
    assert store.write(update).written
    assert store.read(APP) == update


# ---- item 8: scripts replayed after a lost reply ---------------------------------------------


@pytest.fixture
def proxy(redis_url: str) -> Iterator[TcpProxy]:
    target = redis.Redis.from_url(redis_url).connection_pool.connection_kwargs
    with proxy_to(str(target.get("host", "127.0.0.1")), int(target.get("port", 6379))) as made:
        yield made


@pytest.fixture
def proxied(proxy: TcpProxy) -> Iterator[redis.Redis]:
    """A client with the production retries (connect_redis) through the proxy."""
    made = connect_redis(f"redis://127.0.0.1:{proxy.port}/0")
    yield made
    made.close()


def test_a_replayed_write_counts_as_written(
    proxied: redis.Redis, proxy: TcpProxy, keys: KeyLayout
) -> None:
    """The compare-and-set runs, its reply is lost, redis-py runs it again: the replay
    recognises its own write and reports it written (before: "not written", so the
    refresh returned without publishing)."""
    store = TokenStore(proxied, keys)
    now_s = time.time()
    warm = make_update(app_id="wxwarm", version=store.next_version("wxwarm", ACCESS, now_s=now_s))
    assert store.write(warm).written  # scripts loaded, connection open: the next reply is ours
    update = make_update(
        app_id=APP, version=store.next_version(APP, ACCESS, now_s=now_s), issued_at=now_s
    )
    proxy.lose_replies(1)
    result = store.write(update)
    assert proxy.replies_lost == 1, "the reply was lost and the script replayed"
    assert result.written
    assert result.replayed
    assert store.read(APP) == update


def test_a_replayed_budget_spend_spends_once(
    proxied: redis.Redis, proxy: TcpProxy, keys: KeyLayout
) -> None:
    """A spend whose reply is lost and which redis-py replays counts once (before: twice)."""
    budget = RefreshBudget(proxied, keys)
    assert budget.try_spend("wxwarm", TokenApi.CLASSIC).allowed  # script loaded
    proxy.lose_replies(1)
    decision = budget.try_spend(APP, TokenApi.CLASSIC)
    assert proxy.replies_lost == 1
    assert decision.allowed
    assert decision.used_today == 1
    count_key = budget_count_key(keys, APP, TokenApi.CLASSIC, budget_day(time.time()))
    assert proxied.get(count_key) == b"1"
    print(f"\nreplayed spend: counted {int(proxied.get(count_key) or 0)} time(s) in Redis")
