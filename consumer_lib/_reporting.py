"""Passive refresh: telling the producers that WeChat refused a token (`report_invalid`).

Only the token's SHA-256 goes out, once per token per `REPORT_EVERY_S` from a process; the
leader coalesces the reports of the whole fleet. The tokens reported lately are kept in
the order they were reported, so the expired ones are dropped from the front: each report
costs O(1) amortised, however many there are; at most `MAX_TRACKED` are kept (the oldest
go first, and may then be reported again before their time: the leader coalesces them).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections import OrderedDict
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
#: Tokens remembered as reported at most (a gateway may be asked about many).
MAX_TRACKED = 10_000

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
        max_tracked: int = MAX_TRACKED,
    ) -> None:
        if max_tracked < 1:
            raise ValueError("max_tracked must be at least 1")
        self._exchange = requests_exchange(exchange)
        self._clock = clock
        self._monotonic = monotonic
        self._max_tracked = max_tracked
        self._lock = threading.Lock()
        #: When each token was last reported, oldest first (a monotonic clock only grows).
        self._reports: OrderedDict[tuple[str, TokenKind, str], float] = OrderedDict()

    def __len__(self) -> int:
        """Tokens remembered as reported (expired ones go at the next report)."""
        return len(self._reports)

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
            reports = self._reports
            while reports:  # the front is the oldest: stop at the first one still fresh
                oldest = next(iter(reports.values()))
                if now_m - oldest < REPORT_EVERY_S:
                    break
                reports.popitem(last=False)
            if key in reports:
                return False
            reports[key] = now_m
            if len(reports) > self._max_tracked:
                reports.popitem(last=False)
        sent = send(self._exchange, request.encode(), REQUEST_MESSAGE_TYPE)
        if not sent:
            log.warning("could not report %s/%s rejected: broker unreachable", app_id, kind)
            read_snapshot(app_id, kind)
        return sent
