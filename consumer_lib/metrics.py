"""Prometheus metrics of a `TokenClient`, read from the state it already holds.

    from prometheus_client import REGISTRY
    from consumer_lib.metrics import TokenClientCollector

    REGISTRY.register(TokenClientCollector(tokens))

Nothing is updated on the hot path: a scrape reads the client's public read-outs
(`held()`, `stats`, `stats_dict()`, `rejections_dict()`, the connection properties).
`prometheus_client` is an optional dependency (`wxtoken[metrics]`); importing this module
without it raises `ImportError` naming the extra. Labels are the app id (validated on the
wire, at most `max_apps` of them) and the kind; never a token.

    wxtoken_client_token_seconds_left{app_id,kind}   gauge, negative once expired
    wxtoken_client_token_version{app_id,kind}        gauge
    wxtoken_client_updates_total{outcome}             accepted | stale | expired | invalid
    wxtoken_client_signature_checks_total             updates whose signature was checked
    wxtoken_client_rejected_total{reason}             why invalid ones were: malformed,
                                                      unsigned, bad_signature, unknown_key,
                                                      untrusted_publisher, oversize
    wxtoken_client_snapshot_reads_total / _failures_total
    wxtoken_client_clock_offset_seconds              this host's clock minus the producer's
    wxtoken_client_broker_connected                   1 while pushed updates arrive
    wxtoken_client_broker_login_refused               1 while the broker refuses our login
    wxtoken_client_redis_login_refused                1 while Redis refuses it (or a command)
    wxtoken_client_redis_reachable                    0 after a failed snapshot read
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

try:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
    from prometheus_client.registry import Collector
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "consumer_lib.metrics needs prometheus-client: pip install 'wxtoken[metrics]'"
    ) from exc

from ._client.client import TokenClient
from ._client.stats import REASONS

#: More apps than this in one process is not a deployment: the rest are not exported.
DEFAULT_MAX_APPS = 1000


class TokenClientCollector(Collector):
    """Yields the client's metrics at scrape time."""

    def __init__(
        self,
        client: TokenClient,
        *,
        clock: Callable[[], float] = time.time,
        max_apps: int = DEFAULT_MAX_APPS,
    ) -> None:
        self._client = client
        self._clock = clock
        self._max_apps = max_apps

    def collect(self) -> Iterator[Metric]:
        left = GaugeMetricFamily(
            "wxtoken_client_token_seconds_left",
            "Seconds until the held token expires (negative once expired).",
            labels=["app_id", "kind"],
        )
        version = GaugeMetricFamily(
            "wxtoken_client_token_version",
            "Version of the held token.",
            labels=["app_id", "kind"],
        )
        held = sorted(self._client.held().items())[: self._max_apps]
        for (app_id, kind), (update, left_s) in held:
            left.add_metric([app_id, kind.value], left_s)
            version.add_metric([app_id, kind.value], update.version)
        yield left
        yield version
        stats = self._client.stats
        updates = CounterMetricFamily(
            "wxtoken_client_updates",
            "Updates received (pushed or read from Redis), by what became of them.",
            labels=["outcome"],
        )
        for outcome, count in (
            ("accepted", stats.accepted),
            ("stale", stats.stale),
            ("expired", stats.expired),
            ("invalid", stats.rejected),
        ):
            updates.add_metric([outcome], count)
        yield updates
        rejected = CounterMetricFamily(
            "wxtoken_client_rejected",
            "Invalid updates rejected, by reason.",
            labels=["reason"],
        )
        counts = self._client.rejections_dict()
        for reason in REASONS:
            rejected.add_metric([reason], counts.get(reason, 0))
        yield rejected
        yield CounterMetricFamily(
            "wxtoken_client_snapshot_reads",
            "Reads of the Redis snapshot.",
            value=stats.snapshot_reads,
        )
        yield CounterMetricFamily(
            "wxtoken_client_snapshot_failures",
            "Snapshot reads that failed (Redis unreachable).",
            value=stats.snapshot_failures,
        )
        yield CounterMetricFamily(
            "wxtoken_client_signature_checks",
            "Updates whose signature was checked (a re-published copy of one held is not).",
            value=stats.verified,
        )
        yield GaugeMetricFamily(
            "wxtoken_client_clock_offset_seconds",
            "This host's clock minus the producer's, estimated from the messages' send times "
            "(0 before any message).",
            value=self._client.stats_dict()["clock_offset_ms"] / 1000.0,
        )
        yield GaugeMetricFamily(
            "wxtoken_client_broker_connected",
            "1 while subscribed to the exchange.",
            value=1.0 if self._client.connected else 0.0,
        )
        yield GaugeMetricFamily(
            "wxtoken_client_broker_login_refused",
            "1 while the broker refuses this client's login (check WXTOKEN_AMQP_URL).",
            value=1.0 if self._client.broker_login_refused is not None else 0.0,
        )
        yield GaugeMetricFamily(
            "wxtoken_client_redis_login_refused",
            "1 while Redis refuses this client's login or a read (check WXTOKEN_REDIS_URL).",
            value=1.0 if self._client.store_login_refused is not None else 0.0,
        )
        yield GaugeMetricFamily(
            "wxtoken_client_redis_reachable",
            "0 after the last snapshot read failed.",
            value=0.0 if self._client.last_store_error is not None else 1.0,
        )
