"""Outages of each dependency, with real processes: upstream WeChat down (transient and
quota), the broker down for a minute, Redis down for a minute, and both down for longer
than a token lives. Redis and RabbitMQ themselves keep running: connections are broken
with a `TcpProxy` in front of them, which the producer and the subscribers go through.

Whatever happens, a subscriber never calls WeChat with a token WeChat refuses: every
scenario ends with `bad_calls() == []`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis
import requests

from consumer_lib.snapshot import SnapshotReader
from consumer_lib.wire.keys import KeyLayout
from consumer_lib.wire.update import TokenUpdate
from tests.waiting import wait_for

from .procs import Child, Subscriber, wait_line
from .stack import Stack, make_stack
from .tcp_proxy import TcpProxy, proxy_to
from .test_producer_resilience import via_proxy

#: A short lease, so a producer cut off from Redis stops trusting its lease quickly.
PRODUCER_ENV = {"WXTOKEN_LEASE_TTL_S": "4"}
MARGIN_RATIO = 0.2  # the producer's default refresh margin


# ---------------------------------------------------------------------------- helpers
def set_fault(stack: Stack, mode: str, **extra: Any) -> None:
    """Switch the sandbox's token endpoints to `mode` ("none" clears it)."""
    answer = requests.post(
        f"{stack.sandbox.base_url}/sandbox/fault", json={"mode": mode, **extra}, timeout=5
    )
    answer.raise_for_status()


def rejected(stack: Stack, app_id: str) -> int:
    """Token requests for `app_id` that a sandbox fault answered."""
    fetches = stack.sandbox.state.stats()["fetches"]
    assert isinstance(fetches, dict)
    return int(fetches[app_id]["rejected"])


def read_snapshot(redis_url: str, key_prefix: str, app_id: str) -> TokenUpdate | None:
    """The snapshot in Redis, read directly (not through a test's proxy)."""
    client = redis.Redis.from_url(redis_url)
    try:
        return SnapshotReader(client, KeyLayout(key_prefix)).read(app_id)
    finally:
        client.close()


def refresh_point(update: TokenUpdate) -> float:
    """When the producer replaces `update` (wall clock)."""
    return update.expires_at - MARGIN_RATIO * (update.expires_at - update.issued_at)


def wait_until(wall_s: float, message: str) -> None:
    """Wait for a moment on the wall clock (the one token expiries are written in)."""
    wait_for(
        lambda: time.time() >= wall_s,
        timeout_s=max(0.0, wall_s - time.time()) + 5,
        interval_s=0.05,
        message=message,
    )


def hold(seconds: float, message: str, *, every: Callable[[], object] | None = None) -> None:
    """Let a scenario run for `seconds`, calling `every()` (a probe) as it goes."""
    deadline = time.monotonic() + seconds

    def over() -> bool:
        if every is not None:
            every()
        return time.monotonic() >= deadline

    wait_for(over, timeout_s=seconds + 10, interval_s=0.25, message=message)


def log_lines(child: Child, *needles: str) -> list[str]:
    return [
        line
        for line in child.stderr_text().splitlines()
        if all(needle in line for needle in needles)
    ]


def first_call_with(
    subscriber: Subscriber, app_id: str, accept: Callable[[dict[str, Any]], bool]
) -> float | None:
    """The time of the subscriber's first successful call matching `accept`."""
    times = [c["t"] for c in subscriber.calls(app_id) if c["errcode"] == 0 and accept(c)]
    return min(times) if times else None


def check_no_bad_calls(subscribers: list[Subscriber]) -> None:
    for subscriber in subscribers:
        assert subscriber.bad_calls() == [], f"rejected calls; see {subscriber.log_path}"


def start_subscribers(stack: Stack, app_id: str, count: int) -> list[Subscriber]:
    subscribers = [stack.subscriber() for _ in range(count)]
    for subscriber in subscribers:
        subscriber.wait_ready()
    for subscriber in subscribers:
        subscriber.wait_calls(app_id, 3)
    return subscribers


@contextmanager
def proxied_stack(
    tmp_path: Path,
    service_env: dict[str, str],
    *,
    redis_proxy: bool,
    amqp_proxy: bool,
    **stack_args: Any,
) -> Iterator[tuple[Stack, TcpProxy | None, TcpProxy | None]]:
    """A stack whose producers and subscribers reach Redis and/or RabbitMQ through a
    proxy the test can cut; the proxies outlive the stack's processes."""
    redis_at = urlsplit(service_env["WXTOKEN_REDIS_URL"])
    amqp_at = urlsplit(service_env["WXTOKEN_AMQP_URL"])
    with (
        proxy_to(redis_at.hostname or "127.0.0.1", redis_at.port or 6379) as to_redis,
        proxy_to(amqp_at.hostname or "127.0.0.1", amqp_at.port or 5672) as to_amqp,
    ):
        env = dict(service_env)
        if redis_proxy:
            env["WXTOKEN_REDIS_URL"] = via_proxy(service_env["WXTOKEN_REDIS_URL"], to_redis.port)
        if amqp_proxy:
            env["WXTOKEN_AMQP_URL"] = via_proxy(service_env["WXTOKEN_AMQP_URL"], to_amqp.port)
        stack = make_stack(tmp_path, env, **stack_args)
        try:
            yield stack, to_redis if redis_proxy else None, to_amqp if amqp_proxy else None
        finally:
            stack.close()


# ---------------------------------------------------------------------------- 1. upstream
@pytest.mark.slow
def test_upstream_down_longer_than_the_margin(
    tmp_path: Path, service_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """WeChat answers HTTP 500 for 8 s around a refresh point (longer than the 6 s margin,
    shorter than the token's remaining life): subscribers keep the valid token, the
    producer retries with capped backoff and refreshes as soon as WeChat answers. Then
    WeChat says the quota is spent (45009): an ERROR line, and no hammering."""
    lifetime_s, outage_s = 30, 8.0
    stack = make_stack(tmp_path, service_env, expires_in_s=lifetime_s, overlap_s=10, app_count=1)
    app_id = stack.app_ids[0]
    try:
        producer = stack.producer(**PRODUCER_ENV)
        (subscriber,) = start_subscribers(stack, app_id, 1)
        first = stack.snapshot(app_id)
        assert first is not None

        # The outage starts 5 s before the refresh point and ends 3 s before expiry.
        wait_until(refresh_point(first) - 5, "shortly before the refresh point")
        set_fault(stack, "http500", count=None)
        hold(outage_s, "the upstream outage")
        during = stack.snapshot(app_id)
        assert during is not None
        assert during.version == first.version, "refreshed during the outage"
        set_fault(stack, "none")
        cleared = time.time()
        assert cleared < first.expires_at - 2, "the outage outlived the token; test too slow"

        def newer() -> TokenUpdate | None:
            stored = stack.snapshot(app_id)
            return stored if stored is not None and stored.version > first.version else None

        second = wait_for(
            newer,
            timeout_s=5,
            message="a refresh once upstream answers again",
        )
        refreshed_after_s = time.time() - cleared
        assert second is not None
        subscriber.wait_calls(app_id, 3, after_version=first.version, timeout_s=10)
        switched_at = first_call_with(subscriber, app_id, lambda c: c["version"] > first.version)
        assert switched_at is not None
        assert switched_at < first.expires_at

        failures = log_lines(producer, "WARNING", "token fetch failed")
        failing_for_s = cleared - refresh_point(first)
        assert 2 <= len(failures) <= failing_for_s / 0.1 / 4, failures
        assert subscriber.events("unavailable") == []
        check_no_bad_calls([subscriber])
        issued_after_outage = stack.issued(app_id)
        assert issued_after_outage == 2

        # Quota spent at the next refresh point: hard backoff, at most 2 attempts in 10 s.
        wait_until(refresh_point(second) - 2, "shortly before the next refresh point")
        rejected_before = rejected(stack, app_id)
        set_fault(stack, "quota", count=None)
        wait_line(
            producer,
            lambda line: "ERROR" in line and "quota" in line and app_id in line,
            timeout_s=10,
            message="an ERROR line about the quota",
        )
        hold(10, "the producer backing off after 45009")
        quota_attempts = rejected(stack, app_id) - rejected_before
        quota_errors = log_lines(producer, "ERROR", "quota")
        set_fault(stack, "none")
        assert 1 <= quota_attempts <= 2, quota_attempts
        assert 1 <= len(quota_errors) <= 2, quota_errors
        assert "45009" in quota_errors[0]
        assert stack.issued(app_id) == issued_after_outage
        # The held token was served to its end, and nothing past it.
        assert first_call_with(subscriber, app_id, lambda c: c["version"] == second.version)
        assert all(e["t"] >= second.expires_at for e in subscriber.events("unavailable"))
        check_no_bad_calls([subscriber])
        with capsys.disabled():
            print(
                f"\n[outage upstream] {stack.issued(app_id)} upstream fetches; "
                f"{outage_s:.0f} s of HTTP 500 ({failing_for_s:.1f} s of it past the refresh "
                f"point): {len(failures)} failed attempts, new version in Redis "
                f"{refreshed_after_s:.2f} s after upstream answered, "
                f"{first.expires_at - second.issued_at:.1f} s before the old token expired; "
                f"quota 45009: {quota_attempts} attempt(s) in 10 s"
            )
        assert producer.terminate() == 0
    finally:
        stack.close()


# ---------------------------------------------------------------------------- 2. broker
@pytest.mark.slow
def test_broker_down_for_a_minute(
    tmp_path: Path, service_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """RabbitMQ unreachable for 60 s (20 s tokens): the producer refreshes into Redis,
    subscribers poll it and keep valid tokens, and after the broker is back every
    subscriber reconnects and is on the newest version within 5 s."""
    outage_s = 60.0
    with proxied_stack(
        tmp_path,
        service_env,
        redis_proxy=False,
        amqp_proxy=True,
        expires_in_s=20,
        overlap_s=10,
        app_count=1,
    ) as (stack, _, to_amqp):
        assert to_amqp is not None
        app_id = stack.app_ids[0]
        producer = stack.producer(**PRODUCER_ENV)
        subscribers = start_subscribers(stack, app_id, 2)
        before = stack.snapshot(app_id)
        assert before is not None
        subscribed = [len(log_lines(s, "subscribed to exchange")) for s in subscribers]

        to_amqp.cut()
        cut_at = time.time()
        in_redis: set[int] = set()

        def sample_redis() -> None:
            stored = stack.snapshot(app_id)
            if stored is not None:
                in_redis.add(stored.version)

        hold(outage_s, "the broker outage", every=sample_redis)
        refreshed = sorted(v for v in in_redis if v > before.version)
        assert len(refreshed) >= 2, f"Redis versions during the outage: {sorted(in_redis)}"
        for subscriber in subscribers:
            used = {
                c["version"]
                for c in subscriber.calls(app_id)
                if cut_at <= c["t"] and c["version"] > before.version
            }
            assert len(used) >= 2, f"versions used during the outage: {used}"
            assert subscriber.events("unavailable") == []
        check_no_bad_calls(subscribers)

        to_amqp.restore()
        restored = time.time()
        wait_for(
            lambda: all(
                len(log_lines(s, "subscribed to exchange")) > n
                for s, n in zip(subscribers, subscribed, strict=True)
            ),
            timeout_s=5,
            message="every subscriber back on the exchange",
        )
        reconnected_s = time.time() - restored

        def converged() -> float | None:
            stored = stack.snapshot(app_id)
            assert stored is not None
            times = [
                first_call_with(
                    s, app_id, lambda c: c["t"] >= restored and c["version"] >= stored.version
                )
                for s in subscribers
            ]
            if any(t is None for t in times):
                return None
            return max(t for t in times if t is not None) - restored or 0.001

        converged_s = wait_for(converged, timeout_s=5, message="every subscriber on the newest")
        wait_line(
            producer,
            lambda line: "broker available again" in line,
            timeout_s=10,
            message="the producer's publisher reconnecting",
        )
        for subscriber in subscribers:
            assert subscriber.events("unavailable") == []
        check_no_bad_calls(subscribers)
        with capsys.disabled():
            print(
                f"\n[outage broker] {stack.issued(app_id)} upstream fetches; "
                f"{len(refreshed)} refreshes into Redis during {outage_s:.0f} s without a "
                f"broker; after restore: subscribers resubscribed in {reconnected_s:.1f} s, "
                f"all calling with the newest version after {converged_s:.2f} s"
            )
        assert producer.terminate() == 0


# ---------------------------------------------------------------------------- 3. Redis
@pytest.mark.slow
def test_redis_down_for_a_minute_with_stable_tokens(
    tmp_path: Path, service_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Redis unreachable for 60 s (stable 20 s tokens): the leader keeps refreshing and
    publishing, subscribers keep receiving new versions, and Redis is brought up to date
    once it is back."""
    outage_s = 60.0
    with proxied_stack(
        tmp_path,
        service_env,
        redis_proxy=True,
        amqp_proxy=False,
        token_api="stable",
        expires_in_s=20,
        overlap_s=10,
        app_count=1,
    ) as (stack, to_redis, _):
        assert to_redis is not None
        app_id = stack.app_ids[0]
        prefix = service_env["WXTOKEN_KEY_PREFIX"]

        def in_redis() -> TokenUpdate | None:
            return read_snapshot(service_env["WXTOKEN_REDIS_URL"], prefix, app_id)

        producer = stack.producer(**PRODUCER_ENV)
        subscribers = start_subscribers(stack, app_id, 2)
        before = in_redis()
        assert before is not None

        to_redis.cut()
        cut_at = time.time()
        hold(outage_s, "the Redis outage")
        stored_during = in_redis()
        assert stored_during is None or stored_during.version == before.version
        pushed: list[set[int]] = []
        for subscriber in subscribers:
            versions = {
                e["version"]
                for e in subscriber.events("update")
                if e["t"] >= cut_at and e["version"] > before.version
            }
            assert len(versions) >= 2, f"versions pushed during the outage: {versions}"
            pushed.append(versions)
            assert subscriber.events("unavailable") == []
        check_no_bad_calls(subscribers)

        to_redis.restore()
        restored = time.monotonic()

        def redis_caught_up() -> bool:
            newest = max(e["version"] for s in subscribers for e in s.events("update"))
            stored = in_redis()
            return stored is not None and stored.version == newest

        wait_for(redis_caught_up, timeout_s=10, message="Redis holding the newest version")
        caught_up_s = time.monotonic() - restored
        for subscriber in subscribers:
            assert subscriber.events("unavailable") == []
        check_no_bad_calls(subscribers)
        with capsys.disabled():
            print(
                f"\n[outage redis] {stack.issued(app_id)} upstream fetches; "
                f"{max(len(v) for v in pushed)} new versions pushed during {outage_s:.0f} s "
                f"without Redis; Redis up to date {caught_up_s:.2f} s after restore"
            )
        assert producer.terminate() == 0


# ---------------------------------------------------------------------------- 4. both
@pytest.mark.slow
def test_redis_and_broker_down_longer_than_a_token_lives(
    tmp_path: Path, service_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Redis and RabbitMQ both unreachable for 1.5 lifetimes (12 s tokens): subscribers say
    the token is unavailable instead of using an expired one, and once both are back
    everything recovers by itself within about 10 s."""
    lifetime_s = 12
    outage_s = 1.5 * lifetime_s
    with proxied_stack(
        tmp_path,
        service_env,
        redis_proxy=True,
        amqp_proxy=True,
        expires_in_s=lifetime_s,
        overlap_s=10,
        app_count=1,
    ) as (stack, to_redis, to_amqp):
        assert to_redis is not None
        assert to_amqp is not None
        app_id = stack.app_ids[0]
        producer = stack.producer(**PRODUCER_ENV)
        subscribers = start_subscribers(stack, app_id, 2)

        to_redis.cut()
        to_amqp.cut()
        cut_at = time.time()
        hold(outage_s, "both outages")
        for subscriber in subscribers:
            assert [e for e in subscriber.events("unavailable") if e["t"] > cut_at], (
                f"no TokenUnavailable during the outage; see {subscriber.log_path}"
            )
        check_no_bad_calls(subscribers)
        known = max(c["version"] for s in subscribers for c in s.calls(app_id))
        issued_before = stack.issued(app_id)

        to_redis.restore()
        to_amqp.restore()
        restored = time.time()

        def recovered() -> float | None:
            times = [
                first_call_with(s, app_id, lambda c: c["t"] >= restored and c["version"] > known)
                for s in subscribers
            ]
            if any(t is None for t in times):
                return None
            return max(t for t in times if t is not None) - restored or 0.001

        recovered_s = wait_for(recovered, timeout_s=10, message="every subscriber recovering")
        for subscriber in subscribers:
            subscriber.wait_calls(app_id, 3, after_version=known, timeout_s=5)
        check_no_bad_calls(subscribers)
        with capsys.disabled():
            print(
                f"\n[outage both] {stack.issued(app_id)} upstream fetches "
                f"({issued_before} before restore); {outage_s:.0f} s without Redis and broker: "
                f"{sum(len(s.events('unavailable')) for s in subscribers)} unavailable reports, "
                f"0 expired tokens used; every subscriber calling with a new token "
                f"{recovered_s:.2f} s after restore"
            )
        assert producer.terminate() == 0
