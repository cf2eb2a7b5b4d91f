"""A producer with hundreds of apps, and reloading the apps file with a real SIGHUP."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from consumer_lib.wire.keys import KeyLayout
from consumer_lib.wire.update import TokenUpdate
from producer.leadership.announcement import read_announcement
from tests.integration.procs import Producer, wait_line
from tests.integration.stack import Stack, make_stack
from tests.waiting import wait_for

#: Threads a producer may run whatever its app count (issue 7).
MAX_THREADS = 32


def threads_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError("no thread count in /proc")


def apps_toml(stack: Stack, app_ids: list[str]) -> str:
    numbers = {app: n for n, app in enumerate(stack.apps, 1)}
    return "".join(
        f'[[apps]]\napp_id = "{app}"\nsecret_env = "E2E_SECRET_{numbers[app]}"\n' for app in app_ids
    )


@pytest.fixture
def big_stack(tmp_path: Path, service_env: dict[str, str]) -> Iterator[Stack]:
    built = make_stack(tmp_path, service_env, token_api="stable", expires_in_s=7200, app_count=300)
    built.producer_env["WXTOKEN_LOG_LEVEL"] = "INFO"
    yield built
    built.close()


@pytest.mark.slow
def test_hundreds_of_apps_few_threads_every_token_in_redis(big_stack: Stack) -> None:
    """300 apps: every token reaches Redis, verified, while the producer never runs more
    than 32 threads; SIGTERM stops it cleanly."""
    client = redis.Redis.from_url(big_stack.service_env["WXTOKEN_REDIS_URL"])
    keys = KeyLayout(big_stack.service_env["WXTOKEN_KEY_PREFIX"])
    started = time.monotonic()
    producer = big_stack.producer()
    most_threads = [0]

    def all_stored() -> bool:
        most_threads[0] = max(most_threads[0], threads_of(producer.proc.pid))
        return int(client.scard(keys.known)) >= len(big_stack.apps)

    try:
        wait_for(all_stored, timeout_s=120, interval_s=0.1, message="300 tokens in Redis")
        filled_s = time.monotonic() - started
        for app_id in big_stack.app_ids[:: len(big_stack.apps) // 10]:
            stored = big_stack.snapshot(app_id)
            assert isinstance(stored, TokenUpdate)
            assert stored.is_valid_at(time.time())
        most_threads[0] = max(most_threads[0], threads_of(producer.proc.pid))
        print(f"300 apps in Redis after {filled_s:.1f} s; at most {most_threads[0]} threads")
        assert most_threads[0] <= MAX_THREADS
        assert sum(big_stack.issued(a) for a in big_stack.app_ids) == len(big_stack.apps)
        assert producer.terminate(timeout_s=20) == 0
    finally:
        client.close()


@pytest.mark.slow
def test_sighup_reloads_the_apps_file(tmp_path: Path, service_env: dict[str, str]) -> None:
    """A real SIGHUP: an added app is fetched, a removed one no longer served, and a broken
    file leaves the running set alone with one line naming it."""
    stack = make_stack(tmp_path, service_env, token_api="stable", expires_in_s=7200, app_count=3)
    first, second, third = stack.app_ids
    stack.apps_file.write_text(apps_toml(stack, [first, second]))
    client = redis.Redis.from_url(service_env["WXTOKEN_REDIS_URL"])
    keys = KeyLayout(service_env["WXTOKEN_KEY_PREFIX"])
    try:
        producer: Producer = stack.producer()
        wait_for(lambda: stack.snapshot(second), timeout_s=30, message="the first tokens")
        wait_for(
            lambda: (served := read_announcement(client, keys)) and served.apps == [first, second],
            timeout_s=30,
            message="the leader's announcement",
        )
        assert stack.snapshot(third) is None

        stack.apps_file.write_text(apps_toml(stack, [second, third]))
        producer.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: stack.snapshot(third), timeout_s=30, message="the added app's token")
        wait_line(
            producer,
            lambda line: "apps file reloaded" in line and "removed 1" in line,
            timeout_s=10,
            message="the reload line",
        )
        wait_for(
            lambda: (served := read_announcement(client, keys)) and served.apps == [second, third],
            timeout_s=10,
            message="the new announcement",
        )
        assert stack.issued(second) == 1  # unchanged: not fetched again

        stack.apps_file.write_text('[[apps]]\napp_id = "wx-broken"\nnonsense = 1\n')
        producer.proc.send_signal(signal.SIGHUP)
        wait_line(
            producer,
            lambda line: "not reloaded" in line and str(stack.apps_file) in line,
            timeout_s=10,
            message="the refusal line",
        )
        assert producer.proc.poll() is None
        served = read_announcement(client, keys)
        assert served is not None
        assert served.apps == [second, third]
        assert producer.terminate(timeout_s=20) == 0
    finally:
        client.close()
        stack.close()
