"""Metrics of the third-party platforms a producer serves (with `WXTOKEN_PLATFORMS_FILE`).

Read from what the platform threads last saw (`PlatformKeeper.overview`, its counters): a
scrape does no I/O. Every producer reports the registry's state (the roster thread surveys
it on each read); only the leader's counters of pushes acted on move.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from producer.platform.keeper import PlatformKeeper


class PlatformCollector(Collector):
    def __init__(self, keeper: PlatformKeeper, *, clock: Callable[[], float] = time.time) -> None:
        self._keeper = keeper
        self._clock = clock

    def collect(self) -> Iterator[Metric]:
        keeper, now_s = self._keeper, self._clock()
        overview = dict(keeper.overview)
        age = GaugeMetricFamily(
            "wxtoken_platform_verify_ticket_age_seconds",
            "Seconds since the newest component_verify_ticket was stored (WeChat pushes one "
            "every 10 minutes; it is valid 12 hours). Absent: none stored.",
            labels=["component_appid"],
        )
        authorizers = GaugeMetricFamily(
            "wxtoken_platform_authorizers",
            "Authorizers in the registry, by state.",
            labels=["component_appid", "state"],
        )
        waiting = GaugeMetricFamily(
            "wxtoken_platform_pushes_waiting",
            "Stored pushes the leader has not acted on yet.",
            labels=["component_appid"],
        )
        waiting_age = GaugeMetricFamily(
            "wxtoken_platform_oldest_push_waiting_seconds",
            "Seconds since the oldest push not acted on was stored (0: none waiting).",
            labels=["component_appid"],
        )
        for component, seen in sorted(overview.items()):
            if seen.ticket_received_at_s is not None:
                age.add_metric([component], max(0.0, now_s - seen.ticket_received_at_s))
            for state, count in sorted(seen.authorizers.items()):
                authorizers.add_metric([component, state], count)
            waiting.add_metric([component], seen.pushes_waiting)
            oldest = seen.oldest_waiting_received_at_s
            waiting_age.add_metric([component], 0.0 if oldest is None else now_s - oldest)
        yield from (age, authorizers, waiting, waiting_age)
        refused = CounterMetricFamily(
            "wxtoken_platform_ticket_refusals",
            "Component token fetches without a usable verify ticket (none stored, 61005, "
            "61006): no component token, no authorizer token.",
            labels=["component_appid"],
        )
        restarts = CounterMetricFamily(
            "wxtoken_platform_push_restarts",
            "api_start_push_ticket calls made after a ticket refusal.",
            labels=["component_appid"],
        )
        for component in sorted(overview):
            refused.add_metric([component], keeper.tokens.ticket_failures.get(component, 0))
            restarts.add_metric([component], keeper.tokens.push_restarts.get(component, 0))
        yield from (refused, restarts)
        processed = CounterMetricFamily(
            "wxtoken_platform_pushes_processed",
            "Stored pushes the leader acted on, by what they were or what became of them.",
            labels=["outcome"],
        )
        for outcome, count in sorted(keeper.processor.stats.processed.items()):
            processed.add_metric([outcome], count)
        yield processed
        yield GaugeMetricFamily(
            "wxtoken_platform_registry_up",
            "0 since a read of the platform registry (the database) failed.",
            value=1.0 if keeper.stats.registry_up else 0.0,
        )
