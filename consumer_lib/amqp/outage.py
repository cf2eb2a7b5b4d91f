"""Logging an outage without flooding: its start in words, a reminder now and then, its end."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


class OutageLog:
    """Tracks one dependency's outage and says just enough about it.

    The first failure is one WARNING in words ("broker unreachable: connection closed");
    the attempts after it are DEBUG (with the details), except every `remind_every`-th, a
    WARNING saying how long it has lasted. A refused login (`refused`) is an ERROR, once
    per outage and message. The recovery is INFO with the outage's length and attempts.
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
        self._refused: str | None = None

    @property
    def in_outage(self) -> bool:
        return self._started is not None

    def _count(self) -> float:
        """Count an attempt; the seconds since the outage began."""
        now = self._monotonic()
        if self._started is None:
            self._started = now
        self._attempts += 1
        return now - self._started

    def failed(self, reason: str, retry_in_s: float, *, detail: str | None = None) -> None:
        """An attempt failed: `reason` in words, `detail` (pika's account) for DEBUG."""
        lasted_s = self._count()
        if self._attempts == 1:
            self._log.warning("%s unreachable: %s", self._what, reason)
        elif self._attempts % self._remind_every == 0:
            self._log.warning(
                "%s still unreachable after %.0f s and %d attempts: %s",
                self._what,
                lasted_s,
                self._attempts,
                reason,
            )
        self._log.debug(
            "%s unreachable (%s); attempt %d, retrying in %.1f s",
            self._what,
            detail or reason,
            self._attempts,
            retry_in_s,
        )

    def refused(self, message: str, retry_in_s: float) -> None:
        """The dependency refused our login: one ERROR per outage and message (it names the
        user and the variable to fix); retried after `retry_in_s`."""
        self._count()
        if message != self._refused:
            self._refused = message
            self._log.error("%s: %s; retrying every %.0f s", self._what, message, retry_in_s)
            return
        self._log.debug("%s: %s; attempt %d", self._what, message, self._attempts)

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
        self._refused = None
