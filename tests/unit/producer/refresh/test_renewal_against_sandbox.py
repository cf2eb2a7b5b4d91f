"""The unchanged-token rule against the sandbox's WeCom gettoken, over a simulated day."""

from __future__ import annotations

import json

from ops.sandbox import SandboxConfig, SandboxState, WecomAgent
from producer.refresh.renewal import judge_fetch
from producer.upstream.errors import take_credential

AGENT = WecomAgent("ww_corp", "1000002", "agent-secret")
LIFETIME_S, MARGIN_S, DAY_S = 7200, 300.0, 86_400.0


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def simulate(*, recognise_unchanged: bool) -> tuple[int, int, float]:
    """Fetch whenever the rule says, for a day; return (gettoken calls, tokens issued,
    longest time without a valid token held)."""
    clock = Clock()
    state = SandboxState(
        SandboxConfig(apps={}, expires_in_s=LIFETIME_S, wecom_agents=(AGENT,)), clock
    )
    start, calls, held_value, held_expires, worst_gap = clock.now, 0, None, None, 0.0
    while clock.now < start + DAY_S and calls < 10_000:
        fetched = take_credential(
            json.loads(json.dumps(state.wecom_token(AGENT.corp_id, AGENT.secret))),
            "access_token",
        )
        calls += 1
        if held_expires is not None:
            worst_gap = max(worst_gap, clock.now - held_expires)
        renewal = judge_fetch(
            fetched,
            requested_at_s=clock.now,
            held_value=held_value if recognise_unchanged else None,
            held_expires_at_s=held_expires,
            margin_s=MARGIN_S,
        )
        held_value, held_expires = fetched.value, renewal.expires_at_s
        clock.now = renewal.refetch_at_s
    issued = state.stats()["wecom_issued"]
    assert isinstance(issued, dict)
    return calls, int(issued[AGENT.key]), worst_gap


def test_unchanged_token_rule_fetches_twice_per_lifetime_with_no_gap() -> None:
    """With the rule: one new token per lifetime, two calls per lifetime (the margin call
    that gets the same token back, then the one at expiry), never a moment without a token."""
    calls, issued, worst_gap_s = simulate(recognise_unchanged=True)
    naive_calls, naive_issued, _ = simulate(recognise_unchanged=False)
    print(
        f"\n[renewal] a day of {LIFETIME_S} s WeCom tokens: {calls} gettoken calls for "
        f"{issued} tokens with the rule; {naive_calls} calls without it"
    )
    lifetimes = int(DAY_S // LIFETIME_S)
    assert issued == lifetimes
    assert calls <= 2 * lifetimes + 1
    assert worst_gap_s <= 0.0
    assert naive_calls > 2 * calls  # taking the same token for a new one re-fetches ever faster
    assert naive_issued == issued  # WeCom hands out no extra tokens: the waste is the calls
