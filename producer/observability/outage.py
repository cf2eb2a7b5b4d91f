"""One warning when Redis stops answering a best-effort writer, one line when it is back.

The audit trail and the upstream-failure record drop their writes while Redis is away
(they must never stop a refresh); this keeps their logs to one line per outage.
"""

from __future__ import annotations

import logging
import threading


class OutageNotice:
    """Thread-safe: `failed` logs `down_message` (with the error's description) only for the
    first failure of an outage, `succeeded` logs `up_message` (if any) once when it ends."""

    def __init__(
        self, logger: logging.Logger, down_message: str, up_message: str | None = None
    ) -> None:
        self._log = logger
        self._down_message = down_message
        self._up_message = up_message
        self._lock = threading.Lock()
        self._reachable = True

    def failed(self, description: str) -> None:
        with self._lock:
            first, self._reachable = self._reachable, False
        if first:
            self._log.warning(self._down_message, description)

    def succeeded(self) -> None:
        with self._lock:
            recovered, self._reachable = not self._reachable, True
        if recovered and self._up_message is not None:
            self._log.info(self._up_message)
