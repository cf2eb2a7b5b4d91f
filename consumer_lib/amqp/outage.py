"""Logging an outage without flooding: its first failure, a reminder now and then, its end."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


class OutageLog:
    """Tracks one dependency's outage and says just enough about it.

    The first failure is a WARNING; repeats are DEBUG, except every `remind_every`-th, or
    one whose reason differs from the last, which is a WARNING again. The recovery is INFO
    with the outage's length and attempt count.
    """

    def __init__(
        self,
        logger: logging.Logger,
        what: str,
        *,
        remind_every: int = 20,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = logger
        self._what = what
        self._remind_every = remind_every
        self._monotonic = monotonic
        self._started: float | None = None
        self._attempts = 0
        self._last_reason: str | None = None

    @property
    def in_outage(self) -> bool:
        return self._started is not None

    def failed(self, reason: str, retry_in_s: float) -> None:
        if self._started is None:
            self._started = self._monotonic()
        self._attempts += 1
        loud = (
            self._attempts == 1
            or self._attempts % self._remind_every == 0
            or reason != self._last_reason
        )
        self._last_reason = reason
        self._log.log(
            logging.WARNING if loud else logging.DEBUG,
            "%s unavailable (%s); attempt %d, retrying in %.1f s",
            self._what,
            reason,
            self._attempts,
            retry_in_s,
        )

    def recovered(self) -> None:
        if self._started is None:
            return
        self._log.info(
            "%s available again after %.1f s and %d failed attempt(s)",
            self._what,
            self._monotonic() - self._started,
            self._attempts,
        )
        self._started = None
        self._attempts = 0
        self._last_reason = None
