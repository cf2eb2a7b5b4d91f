"""Logging a dependency's outage without flooding: its start, a reminder now and then, its end.

One `OutageLog` per dependency and use (the broker for the publisher, Redis for the audit
trail, the platform registry, ...). Whoever talks to the dependency reports each attempt:
`failed` or `refused` when it went wrong, `succeeded` when it went right. The log says:

- the start, one WARNING in words: ``broker unreachable: connection closed`` (with what is
  done meanwhile, when given: ``...; dropping entries until Redis answers``);
- every attempt at DEBUG, with the details (``broker unreachable (...); attempt 3, retrying
  in 2.0 s``);
- a WARNING reminder once `remind_every_s` has passed since the last WARNING: ``broker still
  unreachable after 300 s and 97 attempts: connection closed``;
- a refused login (a configuration error, not an outage) as one ERROR per outage and message;
- the end, one INFO with the outage's length: ``broker available again after 12.3 s and 9
  failed attempt(s)``.

Thread-safe: best-effort writers report from many threads at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

#: A WARNING reminds operators of a long outage this often.
REMIND_EVERY_S = 300.0


class OutageLog:
    """One dependency's outage, said just enough about (see the module docstring)."""

    def __init__(
        self,
        logger: logging.Logger,
        what: str,
        *,
        meanwhile: str | None = None,
        remind_every_s: float = REMIND_EVERY_S,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = logger
        self._what = what
        self._meanwhile = f"; {meanwhile}" if meanwhile else ""
        self._remind_every_s = remind_every_s
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._started: float | None = None
        self._warned_at = 0.0
        self._attempts = 0
        self._refused: str | None = None

    @property
    def in_outage(self) -> bool:
        return self._started is not None

    def _count(self, now: float) -> tuple[int, float]:
        """Count a failed attempt (under the lock): its number and the outage's length."""
        if self._started is None:
            self._started = self._warned_at = now
        self._attempts += 1
        return self._attempts, now - self._started

    def failed(
        self, reason: str, retry_in_s: float | None = None, *, detail: str | None = None
    ) -> None:
        """An attempt failed: `reason` in words (or a short, secret-free description),
        `detail` for DEBUG; `retry_in_s` when the caller retries on its own schedule."""
        now = self._monotonic()
        with self._lock:
            attempts, lasted_s = self._count(now)
            remind = attempts > 1 and now - self._warned_at >= self._remind_every_s
            if remind:
                self._warned_at = now
        if attempts == 1:
            self._log.warning("%s unreachable: %s%s", self._what, reason, self._meanwhile)
        elif remind:
            self._log.warning(
                "%s still unreachable after %.0f s and %d attempts: %s",
                self._what,
                lasted_s,
                attempts,
                reason,
            )
        if self._log.isEnabledFor(logging.DEBUG):
            retrying = "" if retry_in_s is None else f", retrying in {retry_in_s:.1f} s"
            self._log.debug(
                "%s unreachable (%s); attempt %d%s",
                self._what,
                detail or reason,
                attempts,
                retrying,
            )

    def refused(self, message: str, retry_in_s: float) -> None:
        """The dependency refused our login: one ERROR per outage and message (it names the
        user and the variable to fix); retried after `retry_in_s`."""
        now = self._monotonic()
        with self._lock:
            attempts, _ = self._count(now)
            first, self._refused = message != self._refused, message
        if first:
            self._log.error("%s: %s; retrying every %.0f s", self._what, message, retry_in_s)
        else:
            self._log.debug("%s: %s; attempt %d", self._what, message, attempts)

    def succeeded(self) -> None:
        """An attempt went through: the end of the outage, if one was on, is logged once."""
        if self._started is None:  # the common case, without the lock
            return
        now = self._monotonic()
        with self._lock:
            started, attempts = self._started, self._attempts
            self._started, self._attempts, self._refused = None, 0, None
        if started is None:
            return
        self._log.info(
            "%s available again after %.1f s and %d failed attempt(s)",
            self._what,
            now - started,
            attempts,
        )
