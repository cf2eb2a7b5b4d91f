"""The receiver's metrics, read from the counts it holds at scrape time (no secrets; the
only label is the refusal reason, one of a fixed few)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from producer.platform.receiver._receiver import Receiver, RedisNotifier


class ReceiverCollector(Collector):
    def __init__(self, receiver: Receiver, notifier: RedisNotifier | None = None) -> None:
        self._receiver = receiver
        self._notifier = notifier

    def collect(self) -> Iterator[Metric]:
        rejected = CounterMetricFamily(
            "wxtoken_platform_callbacks_rejected",
            "Pushes to the authorization-event URL refused (nothing stored), by reason.",
            labels=["reason"],
        )
        for reason, count in sorted(self._receiver.rejections.counts.items()):
            rejected.add_metric([reason], count)
        yield rejected
        stored = self._receiver.stored
        accepted = CounterMetricFamily(
            "wxtoken_platform_callbacks_stored",
            "Pushes stored and answered success: new, or a retry of one stored before.",
            labels=["result"],
        )
        accepted.add_metric(["new"], stored.new)
        accepted.add_metric(["duplicate"], stored.duplicate)
        yield accepted
        yield CounterMetricFamily(
            "wxtoken_platform_callbacks_unstored",
            "Verified pushes the registry could not store (answered 503; WeChat pushes again).",
            value=stored.unavailable,
        )
        yield GaugeMetricFamily(
            "wxtoken_platform_registry_ok",
            "1 unless the last write to the platform registry failed.",
            value=1 if stored.registry_ok else 0,
        )
        yield GaugeMetricFamily(
            "wxtoken_platform_replay_remembered",
            "Pushes remembered for replay protection.",
            value=len(self._receiver.replay),
        )
        if self._notifier is not None:
            yield CounterMetricFamily(
                "wxtoken_platform_notices_failed",
                "Stored pushes the leader could not be told about on Redis (it polls).",
                value=self._notifier.failed,
            )
