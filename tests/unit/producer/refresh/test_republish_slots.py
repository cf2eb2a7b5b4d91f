"""Re-publish phases: spread over the interval, the same on every producer, and on whole
slots, so that a fleet's re-publishes go out in batches (one wake-up of the scheduler, the
workers and the publisher per slot, not per message)."""

from __future__ import annotations

import collections

from producer.refresh.timing import REPUBLISH_SLOT_S, RefreshTiming, republish_phase_s

INTERVAL_S = 60.0


def test_phases_are_whole_slots_spread_over_the_interval() -> None:
    phases = [republish_phase_s(f"wxapp{n:05d}", "access_token", INTERVAL_S) for n in range(6000)]
    assert all(0 <= p < INTERVAL_S for p in phases)
    assert all(p % REPUBLISH_SLOT_S == 0 for p in phases)
    per_slot = collections.Counter(phases)
    assert len(per_slot) == INTERVAL_S / REPUBLISH_SLOT_S, "every slot is used"
    print(
        f"[republish slots] 6000 credentials: {min(per_slot.values())}-"
        f"{max(per_slot.values())} per slot of {REPUBLISH_SLOT_S:g} s"
    )
    # Spread: no slot holds more than three times its share.
    assert max(per_slot.values()) < 3 * 6000 / len(per_slot)


def test_a_phase_is_the_same_on_every_producer_and_differs_by_kind() -> None:
    assert republish_phase_s("wxa", "access_token", INTERVAL_S) == republish_phase_s(
        "wxa", "access_token", INTERVAL_S
    )
    kinds = {republish_phase_s("wxa", kind, INTERVAL_S) for kind in ("a", "b", "c", "d", "e")}
    assert len(kinds) > 1


def test_credentials_of_one_slot_are_due_at_the_same_moment() -> None:
    """Two credentials in the same slot re-publish at the same instant, whenever each
    last published: that is what lets their messages go out as one batch."""
    timing = RefreshTiming(republish_interval_s=INTERVAL_S)
    by_slot: dict[float, list[str]] = collections.defaultdict(list)
    for n in range(200):
        app_id = f"wxapp{n:05d}"
        by_slot[republish_phase_s(app_id, "access_token", INTERVAL_S)].append(app_id)
    phase, (first, second, *_) = next((p, a) for p, a in by_slot.items() if len(a) >= 2)
    assert first != second
    assert timing.next_republish_at(1000.3, phase) == timing.next_republish_at(1013.9, phase)


def test_a_short_interval_is_not_quantised() -> None:
    """An interval under two slots keeps its fine phases (tests use short ones)."""
    phases = {republish_phase_s(f"wx{n}", "access_token", 1.5) for n in range(50)}
    assert len(phases) == 50
