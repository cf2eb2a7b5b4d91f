"""The gateway's own metrics, next to the TokenClient's: answers by status, keys loaded."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ._app import Gateway


class GatewayCollector(Collector):
    def __init__(self, gateway: Gateway) -> None:
        self._gw = gateway

    def collect(self) -> Iterator[Metric]:
        responses = CounterMetricFamily(
            "wxtoken_gateway_responses",
            "HTTP answers by status (401/403: refused keys, 429: rate limited, 503: no token).",
            labels=["status"],
        )
        for status, count in sorted(dict(self._gw.responses).items()):
            responses.add_metric([str(status)], count)
        yield responses
        yield GaugeMetricFamily(
            "wxtoken_gateway_keys", "API keys in force.", value=len(self._gw.keys)
        )
        yield GaugeMetricFamily(
            "wxtoken_gateway_tokens_valid",
            "Tokens held that have not expired.",
            value=self._gw.view.valid_count(),
        )
        if self._gw.upstream is not None:
            yield GaugeMetricFamily(
                "wxtoken_gateway_upstream_connected",
                "A relay: 1 while its upstream gateway's stream is open (0: serving what it "
                "holds until expiry).",
                value=1.0 if self._gw.client.connected else 0.0,
            )
