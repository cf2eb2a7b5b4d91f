"""Capped exponential backoff with jitter, so many retries never fall into lockstep."""

from __future__ import annotations

import random
from collections.abc import Callable


class Backoff:
    """`next_delay_s()` grows from `base_s` to `cap_s`; `reset()` after a success."""

    __slots__ = ("_attempt", "_base_s", "_cap_s", "_rand")

    def __init__(
        self, base_s: float, cap_s: float, *, rand: Callable[[], float] = random.random
    ) -> None:
        if base_s <= 0 or cap_s < base_s:
            raise ValueError("need 0 < base_s <= cap_s")
        self._base_s = base_s
        self._cap_s = cap_s
        self._rand = rand
        self._attempt = 0

    @property
    def attempts(self) -> int:
        """Failures since the last reset."""
        return self._attempt

    def next_delay_s(self) -> float:
        """A delay in [ceiling/2, ceiling], the ceiling doubling per failure up to the cap."""
        ceiling_s = min(self._cap_s, self._base_s * 2.0 ** min(self._attempt, 32))
        self._attempt += 1
        return ceiling_s / 2 + self._rand() * ceiling_s / 2

    def reset(self) -> None:
        self._attempt = 0
