"""Passive refresh: telling the producers that WeChat refused a token (`report_invalid`).

Only the token's SHA-256 goes out, once per token per `REPORT_EVERY_S` from a process; the
leader coalesces the reports of the whole fleet. The tokens reported lately are kept in
the order they were reported, so the expired ones are dropped from the front: each report
costs O(1) amortised, however many there are; at most `MAX_TRACKED` are kept (the oldest
go first, and may then be reported again before their time: the leader coalesces them).
Reports made before the client's first connection to the broker (right after `start()`)
wait for it, at most `MAX_PENDING_REPORTS` of them, and go out as soon as it is made
(`flush_pending`). Each report ends in a `ReportOutcome`, which says why nothing was sent
when nothing was.
"""

from __future__ import annotations

import enum
import logging
import os
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from ..wire.refresh_request import (
    REQUEST_MESSAGE_TYPE,
    RefreshRequest,
    requests_exchange,
    safe_requester,
)
from ..wire.update import TokenKind, TokenUpdate

log = logging.getLogger(__name__)

#: A process reports one token at most this often (seconds); the leader coalesces the rest.
REPORT_EVERY_S = 30.0
#: Tokens remembered as reported at most (a gateway may be asked about many).
MAX_TRACKED = 10_000

#: Reports made before the first connection wait for it, at most this many.
MAX_PENDING_REPORTS = 100

#: Publishes (exchange, body, message type) on the client's connection; False if it is down.
Send = Callable[[str, bytes, str], bool]


class ReportOutcome(enum.StrEnum):
    """What became of one `report_invalid()`; `sent` and `queued` count as reported."""

    #: The request went out (handed to the connection's thread).
    SENT = "sent"
    #: Not connected yet since `start()`: it goes out once the first connection is made.
    QUEUED = "queued"
    #: This process already holds a different (newer) token: `get_token()` returns it.
    NOT_CURRENT = "not_current"
    #: This process reported this token less than `REPORT_EVERY_S` ago.
    COALESCED = "coalesced"
    #: The broker is unreachable (or the first connection's queue is full); the app's
    #: snapshot in Redis is read instead.
    BROKER_UNREACHABLE = "broker_unreachable"

    @property
    def reported(self) -> bool:
        return self in (ReportOutcome.SENT, ReportOutcome.QUEUED)

    @property
    def explanation(self) -> str:
        """One sentence for people (the gateway's answer)."""
        return _EXPLANATIONS[self]


_EXPLANATIONS = {
    ReportOutcome.SENT: "sent to the producers",
    ReportOutcome.QUEUED: "not connected to the broker yet: sent once connected",
    ReportOutcome.NOT_CURRENT: "not the current token: a newer one is held; read it again",
    ReportOutcome.COALESCED: (
        f"coalesced: this token was reported less than {REPORT_EVERY_S:.0f} s ago"
    ),
    ReportOutcome.BROKER_UNREACHABLE: "the broker is unreachable: not sent",
}


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
        #: Until `flush_pending` first runs, reports that cannot be sent wait here.
        self._awaiting_connection = False
        self._pending: list[tuple[str, bytes, str]] = []

    def __len__(self) -> int:
        """Tokens remembered as reported (expired ones go at the next report)."""
        return len(self._reports)

    def renew_lock(self) -> None:
        """In a forked child: a lock held by a parent thread would never be released."""
        self._lock = threading.Lock()

    def await_first_connection(self) -> None:
        """From now until `flush_pending`, keep the reports that cannot be sent (the client
        calls it when it starts its broker thread)."""
        with self._lock:
            self._awaiting_connection = True

    def flush_pending(self, send: Send) -> None:
        """Connected: send what waited for it; from now on nothing waits. Called on the
        connection's thread at every (re)connection; only the first finds anything."""
        with self._lock:
            pending, self._pending = self._pending, []
            self._awaiting_connection = False
        for exchange, body, message_type in pending:
            if not send(exchange, body, message_type):
                log.warning("could not send a report queued before connecting: disconnected")
                return
        if pending:
            log.info("sent %d report(s) made before the broker connection", len(pending))

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
    ) -> ReportOutcome:
        """`TokenClient.report_invalid`: send a request about `token`. Nothing goes out when
        none is needed (a different token is `held`, or this process reported this token in
        the last `REPORT_EVERY_S`); before the first connection it waits for it; when the
        broker is unreachable the app's snapshot is read instead (`read_snapshot`).
        `requester` names who asks (made safe by `safe_requester`); by default this process."""
        if held is not None and held.value != token:
            return ReportOutcome.NOT_CURRENT  # get_token() returns the newer one
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
                return ReportOutcome.COALESCED
            reports[key] = now_m
            if len(reports) > self._max_tracked:
                reports.popitem(last=False)
        body = request.encode()
        if send(self._exchange, body, REQUEST_MESSAGE_TYPE):
            return ReportOutcome.SENT
        with self._lock:
            waiting = self._awaiting_connection
            if waiting and len(self._pending) < MAX_PENDING_REPORTS:
                self._pending.append((self._exchange, body, REQUEST_MESSAGE_TYPE))
                return ReportOutcome.QUEUED
        if not waiting and send(self._exchange, body, REQUEST_MESSAGE_TYPE):
            return ReportOutcome.SENT  # connected (and flushed) since the first try
        why = "first connection's queue full" if waiting else "broker unreachable"
        log.warning("could not report %s/%s rejected: %s", app_id, kind, why)
        read_snapshot(app_id, kind)
        return ReportOutcome.BROKER_UNREACHABLE
