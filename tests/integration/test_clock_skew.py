"""A producer whose clock is minutes off (issue 8, item 7), with the real broker and Redis.

The producer runs in this process with an injected clock, five minutes behind or ahead of
the real one; the subscriber is a child process on the real clock, calling the sandbox
(which expires tokens on the real clock) with every token it gets. Without the clock
correction a producer behind makes every token look expired on arrival (the subscriber
has none), and one ahead makes the subscriber keep a token WeChat already refuses.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from consumer_lib.settings import load_settings
from consumer_lib.wire.keys import KeyLayout
from producer.apps import load_apps
from producer.leadership.clock_skew import read_skews
from producer.service import ProducerService
from producer.settings import ProducerSettings
from tests.waiting import wait_for

from .stack import Stack, make_stack

SKEW_S = 300.0


@pytest.fixture
def skewed_stack(tmp_path: Path, service_env: dict[str, str]) -> Iterator[Stack]:
    built = make_stack(tmp_path, service_env, expires_in_s=30, overlap_s=10, app_count=1)
    yield built
    built.close()


def start_producer(stack: Stack, monkeypatch: pytest.MonkeyPatch, skew_s: float) -> ProducerService:
    """A producer in this process whose wall clock reads `skew_s` off the real one."""
    for name, value in {**stack.service_env, **stack.producer_env}.items():
        monkeypatch.setenv(name, value)
    settings = load_settings(ProducerSettings)
    apps = load_apps(settings.apps_file, wechat_base_url=settings.wechat_base_url)
    return ProducerService(settings, apps, clock=lambda: time.time() + skew_s).start()


@pytest.mark.slow
@pytest.mark.parametrize("skew_s", [-SKEW_S, SKEW_S], ids=["producer-behind", "producer-ahead"])
def test_a_subscriber_keeps_a_valid_token_across_a_refresh_whatever_the_producers_clock(
    skewed_stack: Stack,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    skew_s: float,
) -> None:
    """Every call the subscriber makes is accepted, it never lacks a token, it switches to
    the refreshed token before the first one really expires; both sides report the skew.
    Once the producer stops, the subscriber's token ends with WeChat's: `TokenUnavailable`,
    never a call WeChat refuses."""
    stack = skewed_stack
    app_id = stack.app_ids[0]
    caplog.set_level(logging.WARNING, logger="producer.leadership.clock_skew")
    producer = start_producer(stack, monkeypatch, skew_s)
    try:
        subscriber = stack.subscriber()
        subscriber.wait_ready()
        subscriber.wait_calls(app_id, 3)
        first = stack.snapshot(app_id)
        assert first is not None
        real_expiry_s = first.expires_at - skew_s
        # The refresh comes at 80 % of the 30 s life; wait for calls with its token.
        subscriber.wait_calls(app_id, 3, after_version=first.version, timeout_s=40)
        switched = [c["t"] for c in subscriber.calls(app_id) if c["version"] > first.version]
        print(
            f"[clock skew {skew_s:+.0f} s] {len(subscriber.calls(app_id))} calls, switched "
            f"to the refreshed token {real_expiry_s - min(switched):.1f} s before the first "
            f"one expired"
        )
        assert min(switched) < real_expiry_s
        assert subscriber.events("unavailable") == []
        assert subscriber.bad_calls() == [], f"rejected calls; see {subscriber.log_path}"
        assert "from the producer's" in subscriber.stderr_text()

        def skew_reported() -> bool:
            return any("from Redis's" in r.getMessage() for r in caplog.records)

        wait_for(skew_reported, timeout_s=40, message="the producer's skew warning")
        client = redis.Redis.from_url(stack.service_env["WXTOKEN_REDIS_URL"])
        try:
            (report,) = read_skews(client, KeyLayout(stack.service_env["WXTOKEN_KEY_PREFIX"]))
        finally:
            client.close()
        assert abs(report.skew_s - skew_s) < 2

        # No more refreshes: the held token must end when WeChat's does, not 5 min off.
        second = stack.snapshot(app_id)
        assert second is not None
        producer.close()
        second_expiry_s = second.expires_at - skew_s

        def unavailable_after_expiry() -> bool:
            return any(e["t"] >= second_expiry_s for e in subscriber.events("unavailable"))

        wait_for(unavailable_after_expiry, timeout_s=60, message="TokenUnavailable at expiry")
        last_call = max(c["t"] for c in subscriber.calls(app_id) if c["errcode"] == 0)
        print(
            f"[clock skew {skew_s:+.0f} s] last accepted call "
            f"{second_expiry_s - last_call:.2f} s before the token expired"
        )
        assert subscriber.bad_calls() == [], f"rejected calls; see {subscriber.log_path}"
    finally:
        producer.close()
