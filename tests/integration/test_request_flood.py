"""Issue 8 item 1: a consumer credential flooding refresh requests about the current token.

Two producers, a classic and a stable app, the sandbox WeChat, the real Redis and RabbitMQ.
An attacker publishes requests about each app's current token for some seconds: the leader
checks the token upstream (getcallbackip), finds it accepted, and refreshes nothing. Then
the sandbox revokes both tokens while the flood goes on: each is refreshed exactly once.

The per-requester limit is lifted here (it would drop most of the flood before the check:
tests/unit/producer/limits/test_request_limits.py covers it) and the check's verdict is
reused for 3 s instead of 60 s, so the revoked tokens are noticed within seconds.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis

from consumer_lib.wire.keys import KeyLayout
from producer.store.audit import AuditLog
from tests.waiting import wait_for

from .flooder import Flooder
from .stack import Stack, make_stack

FLOOD_S = 8.0
AFTER_REVOKE_S = 4.0


def forced(stack: Stack, app_id: str) -> int:
    """Request-caused refreshes of `app_id` in the audit trail."""
    client = redis.Redis.from_url(stack.service_env["WXTOKEN_REDIS_URL"])
    try:
        audit = AuditLog(client, KeyLayout(stack.service_env["WXTOKEN_KEY_PREFIX"]))
        return sum(e.event == "forced_refresh" for e in audit.read(app_id, limit=10_000))
    finally:
        client.close()


def token_calls(stack: Stack, app_id: str) -> int:
    """Token fetches the sandbox answered for `app_id` (classic, stable, forced)."""
    fetches = stack.sandbox.state.stats()["fetches"]
    assert isinstance(fetches, dict)
    counts = fetches[app_id]
    return int(counts["classic"] + counts["stable"] + counts["stable_forced"])


def pause(seconds: float) -> None:
    deadline = time.monotonic() + seconds
    wait_for(lambda: time.monotonic() >= deadline, timeout_s=seconds + 5, message="the flood")


@pytest.mark.slow
def test_a_flood_about_the_current_token_fetches_nothing_until_it_is_revoked(
    tmp_path: Path, service_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    stack = make_stack(tmp_path, service_env, expires_in_s=40, overlap_s=10, app_count=2)
    classic, stable = stack.app_ids
    stack.apps_file.write_text(
        "".join(
            f'[[apps]]\napp_id = "{app}"\nsecret_env = "E2E_SECRET_{n}"\ntoken_api = "{api}"\n'
            for n, (app, api) in enumerate(((classic, "classic"), (stable, "stable")), 1)
        )
    )
    env = {
        "WXTOKEN_TOKEN_CHECK_TTL_S": "3",
        "WXTOKEN_REQUEST_RATE_PER_REQUESTER_PER_S": "10000",
        "WXTOKEN_REQUEST_BURST_PER_REQUESTER": "100000",
    }
    flooder: Flooder | None = None
    try:
        producers = [stack.producer(**env), stack.producer(**env)]
        for app_id in stack.app_ids:
            wait_for(lambda a=app_id: stack.snapshot(a), timeout_s=30, message=f"{app_id} held")
        first = {a: stack.snapshot(a) for a in stack.app_ids}
        calls_before = {a: token_calls(stack, a) for a in stack.app_ids}
        forced_before = {a: forced(stack, a) for a in stack.app_ids}
        flooder = Flooder(
            amqp_url=stack.service_env["WXTOKEN_AMQP_URL"],
            redis_url=stack.service_env["WXTOKEN_REDIS_URL"],
            exchange=stack.service_env["WXTOKEN_EXCHANGE"],
            key_prefix=stack.service_env["WXTOKEN_KEY_PREFIX"],
            app_ids=stack.app_ids,
        ).start()
        pause(FLOOD_S)
        sent_flood = flooder.sent
        caused = {a: forced(stack, a) - forced_before[a] for a in stack.app_ids}
        calls = {a: token_calls(stack, a) - calls_before[a] for a in stack.app_ids}
        probes = dict(stack.sandbox.state.stats()["calls"].get("getcallbackip", {}))  # type: ignore[union-attr]

        # Upstream now refuses both tokens; the flood goes on and reports them.
        revoked = {a: stack.snapshot(a) for a in stack.app_ids}
        forced_at_revoke = {a: forced(stack, a) for a in stack.app_ids}
        for app_id in stack.app_ids:
            assert stack.sandbox.state.invalidate(app_id)
        revoked_at = time.monotonic()
        for app_id in stack.app_ids:
            old = revoked[app_id]
            assert old is not None
            wait_for(
                lambda a=app_id, v=old.version: stack.snapshot(a).version > v,  # type: ignore[union-attr]
                timeout_s=30,
                message=f"{app_id}'s revoked token replaced",
            )
        replaced_s = time.monotonic() - revoked_at
        pause(AFTER_REVOKE_S)
        flooder.stop()
        after_revoke = {a: forced(stack, a) - forced_at_revoke[a] for a in stack.app_ids}
        errors = sum("something else has refreshed this app" in p.stderr_text() for p in producers)
        with capsys.disabled():
            print(
                f"\n[request flood] {sent_flood} requests in {FLOOD_S:.0f} s about the current "
                f"tokens: request-caused fetches classic {caused[classic]}, stable "
                f"{caused[stable]}; token calls upstream classic {calls[classic]}, stable "
                f"{calls[stable]}; token checks {probes}. Both tokens revoked: replaced in "
                f"{replaced_s:.1f} s, {after_revoke} request-caused refresh(es) each"
            )
        assert first[classic] is not None
        for app_id in stack.app_ids:
            assert caused[app_id] <= 1, (app_id, caused)
            assert calls[app_id] <= 2, (app_id, calls)  # a scheduled one may fall in
            assert after_revoke[app_id] == 1, (app_id, after_revoke)
        assert flooder.sent > sent_flood  # the flood went on during the revocation
        # One ERROR line per revoked token: the producer still thought it valid.
        logs = "".join(p.stderr_text() for p in producers)
        assert logs.count("something else has refreshed this app") == 2, errors
    finally:
        if flooder is not None and flooder.error is None:
            flooder.stop()
        stack.close()
