"""Passive refresh: telling the producers that WeChat refused a token (`report_invalid`).

Only the token's SHA-256 goes out, once per token per `REPORT_EVERY_S` from a process; the
leader coalesces the reports of the whole fleet.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable

from .wire.refresh_request import (
    REQUEST_MESSAGE_TYPE,
    RefreshRequest,
    requests_exchange,
    safe_requester,
)
from .wire.update import TokenKind, TokenUpdate

log = logging.getLogger("consumer_lib._client")

#: A process reports one token at most this often (seconds); the leader coalesces the rest.
REPORT_EVERY_S = 30.0

#: Publishes (exchange, body, message type) on the client's connection; False if it is down.
Send = Callable[[str, bytes, str], bool]


class InvalidReporter:
    """Builds and sends refresh requests, at most one per token per `REPORT_EVERY_S`."""

    def __init__(
        self,
        exchange: str,
        *,
        clock: Callable[[], float],
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._exchange = requests_exchange(exchange)
        self._clock = clock
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._reports: dict[tuple[str, TokenKind, str], float] = {}

    def renew_lock(self) -> None:
        """In a forked child: a lock held by a parent thread would never be released."""
        self._lock = threading.Lock()

    def report(
        self,
        app_id: str,
        token: str,
        kind: TokenKind,
        *,
        held: TokenUpdate | None,
        reason: str | None,
        send: Send,
        read_snapshot: Callable[[str, TokenKind], None],
        requester: str | None = None,
    ) -> bool:
        """`TokenClient.report_invalid`: send a request about `token`; True if it went out.
        False when none was needed (a different token is `held`, or this process reported
        this token in the last `REPORT_EVERY_S`) or the broker is unreachable, in which
        case the app's snapshot is read instead (`read_snapshot`). `requester` names who
        asks (made safe by `safe_requester`); by default this process."""
        if held is not None and held.value != token:
            return False  # already replaced here: get_token() returns the newer one
        # Built first: a request that does not validate (it raises) marks nothing, so it
        # cannot keep this token's valid reports back.
        request = RefreshRequest.for_token(
            app_id,
            token,
            kind=kind,
            requester=safe_requester(requester or f"client:{socket.gethostname()}-{os.getpid()}"),
            now_s=self._clock(),
            reported_version=held.version if held is not None else None,
            reason=reason,
        )
        key = (app_id, kind, request.token_sha256)
        now_m = self._monotonic()
        with self._lock:
            self._reports = {k: t for k, t in self._reports.items() if now_m - t < REPORT_EVERY_S}
            if key in self._reports:
                return False
            self._reports[key] = now_m
        sent = send(self._exchange, request.encode(), REQUEST_MESSAGE_TYPE)
        if not sent:
            log.warning("could not report %s/%s rejected: broker unreachable", app_id, kind)
            read_snapshot(app_id, kind)
        return sent
