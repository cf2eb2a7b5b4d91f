"""Counting upstream calls: a `Fetcher` wrapper that records each call's outcome, errcode
and latency, for metrics. No prometheus dependency here; `producer.observability.metrics`
exports it.

Outcomes: `ok`, or the `FailureKind` of the `UpstreamError` (`transient`, `config`,
`quota`). The errcode label is WeChat's errcode when it is one we know (a bounded set),
`other` for an unknown one and `none` when there was none (timeouts, HTTP errors, ok).
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

from consumer_lib.wire.kinds import TokenKind
from producer.apps import AppConfig
from producer.ports import Fetcher
from producer.upstream.errcodes import ERRCODES
from producer.upstream.wechat import FetchedToken, UpstreamError

#: Upper bounds of the latency histogram, seconds (WeChat answers in 50-500 ms).
LATENCY_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass
class LatencyHistogram:
    """Cumulative-ready counts per bucket (the last one is +Inf), and the sum."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS_S) + 1))
    sum_s: float = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(LATENCY_BUCKETS_S, seconds)] += 1
        self.sum_s += seconds


def errcode_label(errcode: int | None) -> str:
    if errcode is None:
        return "none"
    return str(errcode) if errcode in ERRCODES else "other"


class MeteredFetcher:
    """Calls `inner.fetch` and counts what happened; thread-safe (one thread per app)."""

    def __init__(self, inner: Fetcher, *, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._inner = inner
        self._monotonic = monotonic
        self._lock = threading.Lock()
        #: (app_id, outcome, errcode label) -> calls
        self._outcomes: dict[tuple[str, str, str], int] = {}
        self._latency: dict[str, LatencyHistogram] = {}

    @property
    def inner(self) -> Fetcher:
        """The fetcher counted (its other calls, e.g. `clear_quota`, are not)."""
        return self._inner

    def fetch(self, app: AppConfig, *, force_refresh: bool = False) -> FetchedToken:
        return self._metered(app, lambda: self._inner.fetch(app, force_refresh=force_refresh))

    def fetch_ticket(self, app: AppConfig, kind: TokenKind, access_token: str) -> FetchedToken:
        """A ticket call, counted with the app's other calls; needs an inner that fetches
        tickets (`producer.upstream.routing.Upstream`)."""
        fetch = getattr(self._inner, "fetch_ticket", None)
        if fetch is None:
            raise TypeError(f"{type(self._inner).__name__} fetches no tickets")
        return self._metered(app, lambda: cast(FetchedToken, fetch(app, kind, access_token)))

    def _metered(self, app: AppConfig, call: Callable[[], FetchedToken]) -> FetchedToken:
        started = self._monotonic()
        outcome, errcode = "ok", "none"
        try:
            return call()
        except UpstreamError as exc:
            outcome, errcode = exc.kind.value, errcode_label(exc.errcode)
            raise
        finally:
            elapsed_s = self._monotonic() - started
            with self._lock:
                key = (app.app_id, outcome, errcode)
                self._outcomes[key] = self._outcomes.get(key, 0) + 1
                self._latency.setdefault(app.app_id, LatencyHistogram()).observe(elapsed_s)

    def outcomes(self) -> dict[tuple[str, str, str], int]:
        with self._lock:
            return dict(self._outcomes)

    def latency(self) -> dict[str, LatencyHistogram]:
        with self._lock:
            return {
                app: LatencyHistogram(list(h.counts), h.sum_s) for app, h in self._latency.items()
            }
