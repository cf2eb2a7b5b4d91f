"""Prometheus metrics of a producer, read at scrape time from the state it already holds.

`ProducerView` is the small interface: callables returning what the producer knows.
`view_of(service, meter)` builds one from a `ProducerService`; `ProducerCollector(view)`
yields the metrics. Labels: app id (from the apps file), kind, token API, outcome, and a
bounded errcode set (`upstream_meter.errcode_label`); never a token or secret.

    wxtoken_producer_token_seconds_left{app_id,kind}       the token this producer holds
    wxtoken_producer_token_version{app_id,kind}
    wxtoken_producer_token_refused{app_id,kind}            1: upstream refuses it, refresh held
    wxtoken_producer_token_refused_refresh_due_timestamp_seconds{app_id,kind}
    wxtoken_producer_fetches_total{app_id,kind}            upstream calls that gave a token
    wxtoken_producer_fetch_failures_total{app_id,kind}
    wxtoken_producer_forced_refreshes_total{app_id,kind}   after reports of the current token
    wxtoken_producer_refresh_requests_total{app_id,kind,handling}  received | old_token |
                                                  over_budget | refuted
    wxtoken_producer_writes_fenced_total{app_id,kind}
    wxtoken_producer_store_failures_total{app_id,kind}
    wxtoken_producer_upstream_calls_total{app_id,outcome,errcode}
    wxtoken_producer_upstream_seconds{app_id}              histogram
    wxtoken_producer_budget_used{app_id,api} / wxtoken_producer_budget_limit{app_id,api}
    wxtoken_producer_leader                                1 while holding the lease
    wxtoken_producer_lease_epoch                           changes() of it counts takeovers
    wxtoken_producer_lease_acquisitions_total              times this one became the leader
    wxtoken_producer_publishes_total{result}               confirmed | nacked
    wxtoken_producer_messages_received_total               on the requests exchange
    wxtoken_producer_messages_rejected_total{message,reason}  refresh_request: invalid |
                                      failed | over_rate | not_held; control: invalid |
                                      over_rate | expired | replayed
    wxtoken_producer_clock_skew_seconds                   this clock minus Redis's (TIME)
    wxtoken_producer_broker_connected / wxtoken_producer_redis_reachable
    wxtoken_producer_broker_login_refused                 1 while the broker refuses our login
    wxtoken_producer_redis_login_refused                  1 while Redis refuses it (WRONGPASS,
                                                          NOPERM)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from consumer_lib import TokenUpdate
from consumer_lib.wire.kinds import TokenKind
from producer.apps import AppConfig
from producer.limits.budget import RefreshBudget
from producer.refresh.stats import RefresherStats
from producer.upstream.meter import LATENCY_BUCKETS_S, MeteredFetcher

if TYPE_CHECKING:
    from producer.service import ProducerService


@dataclass(frozen=True)
class ProducerView:
    """What the collector reads; every callable is cheap and does no I/O."""

    apps: Callable[[], Sequence[tuple[AppConfig, TokenKind, TokenUpdate | None, RefresherStats]]]
    is_leader: Callable[[], bool]
    epoch: Callable[[], int | None]
    broker_connected: Callable[[], bool]
    redis_reachable: Callable[[], bool]
    budget: RefreshBudget | None = None
    meter: MeteredFetcher | None = None
    #: (confirmed, nacked) publishes so far
    publishes: Callable[[], tuple[int, int]] | None = None
    #: times this producer became the leader
    lease_acquisitions: Callable[[], int] | None = None
    #: the publisher's thread runs and its loop turns (connected or not)
    publisher_healthy: Callable[[], bool] | None = None
    #: messages received on the requests exchange, and those refused by (message, reason)
    messages: Callable[[], tuple[int, Mapping[tuple[str, str], int]]] | None = None
    #: this producer's clock minus Redis's (s), None before it was measured
    clock_skew: Callable[[], float | None] | None = None
    #: why the broker refuses the publisher's or the listener's login, None if it does not
    broker_login_refused: Callable[[], str | None] | None = None
    #: why Redis refuses the lease's login or commands, None if it does not
    redis_login_refused: Callable[[], str | None] | None = None


def _messages(service: ProducerService) -> tuple[int, Mapping[tuple[str, str], int]]:
    """Counts of the request listener and the control handler (bounded reasons)."""
    listener, control = service.requests.stats, service.control.stats
    return listener.received, {
        ("refresh_request", "invalid"): listener.rejected,
        ("refresh_request", "failed"): listener.handler_errors,
        ("refresh_request", "over_rate"): listener.dropped,
        ("refresh_request", "not_held"): listener.ignored,
        ("control", "invalid"): control.rejected,
        ("control", "over_rate"): listener.control_dropped,
        ("control", "expired"): control.expired,
        ("control", "replayed"): control.replayed,
    }


def view_of(service: ProducerService, meter: MeteredFetcher | None = None) -> ProducerView:
    """The view of a running `ProducerService` (the one place that knows its insides)."""
    return ProducerView(
        # Per app and kind: each credential (access token, tickets) has its own refresher.
        apps=lambda: [(r.app, r.kind, r.held, r.stats) for r in service.refreshers],
        is_leader=lambda: service.leadership.is_leader,
        epoch=lambda: service.leadership.epoch,
        broker_connected=lambda: service.publisher.connected,
        redis_reachable=lambda: service.leadership.store_reachable,
        budget=getattr(service, "budget", None),
        meter=meter,
        publishes=lambda: (service.publisher.published_count, service.publisher.nacked_count),
        lease_acquisitions=lambda: service.leadership.acquisitions,
        publisher_healthy=lambda: service.publisher.healthy,
        messages=lambda: _messages(service),
        clock_skew=lambda: service.clock_skew.skew_s,
        broker_login_refused=lambda: (
            service.publisher.login_refused or service.requests.login_refused
        ),
        redis_login_refused=lambda: service.leadership.login_refused,
    )


def is_healthy(view: ProducerView) -> tuple[bool, str]:
    """Alive: the publisher's loop turns (a broker outage is not a failure of ours)."""
    if view.publisher_healthy is not None and not view.publisher_healthy():
        return False, "the publisher thread stopped or its loop stalled"
    return True, "alive"


def is_ready(view: ProducerView) -> tuple[bool, str]:
    """Ready: the leader, or a standby following Redis; never while the broker refuses our
    login (a configuration error: nothing is published)."""
    for login in (view.broker_login_refused, view.redis_login_refused):
        refused = login() if login is not None else None
        if refused is not None:
            return False, refused
    if view.is_leader():
        return True, "leader"
    if view.redis_reachable():
        return True, "standby, following Redis"
    return False, "not the leader and Redis unreachable"


def _counter(name: str, doc: str, labels: list[str]) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, labels=labels)


class ProducerCollector(Collector):
    def __init__(self, view: ProducerView, *, clock: Callable[[], float] = time.time) -> None:
        self._view = view
        self._clock = clock

    def collect(self) -> Iterator[Metric]:
        skew_s = self._view.clock_skew() if self._view.clock_skew is not None else None
        if skew_s is not None:
            yield GaugeMetricFamily(
                "wxtoken_producer_clock_skew_seconds",
                "This producer's wall clock minus Redis's, from TIME on lease ticks.",
                value=skew_s,
            )
        yield from self._tokens_and_stats()
        yield from self._upstream()
        yield from self._budget()
        view = self._view
        yield GaugeMetricFamily(
            "wxtoken_producer_leader",
            "1 while this producer holds the lease.",
            value=1.0 if view.is_leader() else 0.0,
        )
        epoch = view.epoch()
        if epoch is not None:
            yield GaugeMetricFamily(
                "wxtoken_producer_lease_epoch",
                "Lease term last held or seen; each change is a new leader.",
                value=epoch,
            )
        if view.lease_acquisitions is not None:
            yield CounterMetricFamily(
                "wxtoken_producer_lease_acquisitions",
                "Times this producer became the leader (at start, or taking over).",
                value=view.lease_acquisitions(),
            )
        if view.publishes is not None:
            confirmed, nacked = view.publishes()
            publishes = _counter(
                "wxtoken_producer_publishes", "Publishes by broker answer.", ["result"]
            )
            publishes.add_metric(["confirmed"], confirmed)
            publishes.add_metric(["nacked"], nacked)
            yield publishes
        if view.messages is not None:
            received, refused = view.messages()
            yield CounterMetricFamily(
                "wxtoken_producer_messages_received",
                "Messages received on the requests exchange (reports, control requests).",
                value=received,
            )
            rejected = _counter(
                "wxtoken_producer_messages_rejected",
                "Messages refused or failed, by message type and reason.",
                ["message", "reason"],
            )
            for (message, reason), count in sorted(refused.items()):
                rejected.add_metric([message, reason], count)
            yield rejected
        yield GaugeMetricFamily(
            "wxtoken_producer_broker_connected",
            "1 while the publisher's channel is open.",
            value=1.0 if view.broker_connected() else 0.0,
        )
        if view.broker_login_refused is not None:
            yield GaugeMetricFamily(
                "wxtoken_producer_broker_login_refused",
                "1 while the broker refuses this producer's login (check WXTOKEN_AMQP_URL).",
                value=1.0 if view.broker_login_refused() is not None else 0.0,
            )
        if view.redis_login_refused is not None:
            yield GaugeMetricFamily(
                "wxtoken_producer_redis_login_refused",
                "1 while Redis refuses this producer's login or a lease command "
                "(check WXTOKEN_REDIS_URL and the user's ACL).",
                value=1.0 if view.redis_login_refused() is not None else 0.0,
            )
        yield GaugeMetricFamily(
            "wxtoken_producer_redis_reachable",
            "0 since a lease call to Redis failed.",
            value=1.0 if view.redis_reachable() else 0.0,
        )

    def _tokens_and_stats(self) -> Iterator[Metric]:
        now_s = self._clock()
        left = GaugeMetricFamily(
            "wxtoken_producer_token_seconds_left",
            "Seconds until the token this producer holds expires.",
            labels=["app_id", "kind"],
        )
        version = GaugeMetricFamily(
            "wxtoken_producer_token_version",
            "Version of the held token.",
            labels=["app_id", "kind"],
        )
        fetches = _counter(
            "wxtoken_producer_fetches", "Upstream fetches that gave a token.", ["app_id", "kind"]
        )
        failures = _counter(
            "wxtoken_producer_fetch_failures", "Upstream fetches that failed.", ["app_id", "kind"]
        )
        forced = _counter(
            "wxtoken_producer_forced_refreshes",
            "Refreshes forced by reports that the current token was rejected.",
            ["app_id", "kind"],
        )
        requests = _counter(
            "wxtoken_producer_refresh_requests",
            "Refresh requests (reports) received, and how they were handled.",
            ["app_id", "kind", "handling"],
        )
        fenced = _counter(
            "wxtoken_producer_writes_fenced",
            "Writes refused: the lease was lost.",
            ["app_id", "kind"],
        )
        store = _counter("wxtoken_producer_store_failures", "Redis failures.", ["app_id", "kind"])
        refused = GaugeMetricFamily(
            "wxtoken_producer_token_refused",
            "1 while upstream refuses the held token and a budget holds its refresh back.",
            labels=["app_id", "kind"],
        )
        refresh_due = GaugeMetricFamily(
            "wxtoken_producer_token_refused_refresh_due_timestamp_seconds",
            "When the refresh of a held token upstream refuses is due (UNIX time).",
            labels=["app_id", "kind"],
        )
        for app, kind, held, stats in self._view.apps():
            labels = [app.app_id, kind.value]
            if held is not None:
                left.add_metric(labels, held.seconds_left(now_s))
                version.add_metric(labels, held.version)
                is_refused = stats.refused_version == held.version
                refused.add_metric(labels, 1.0 if is_refused else 0.0)
                due_s = stats.refused_refresh_due_at_s
                if is_refused and due_s is not None:
                    refresh_due.add_metric(labels, due_s)
            fetches.add_metric(labels, stats.fetches)
            failures.add_metric(labels, stats.fetch_failures)
            forced.add_metric(labels, stats.forced_refreshes)
            requests.add_metric([*labels, "received"], stats.requests_received)
            requests.add_metric([*labels, "old_token"], stats.requests_about_old_tokens)
            requests.add_metric([*labels, "over_budget"], stats.requests_over_budget)
            requests.add_metric([*labels, "refuted"], stats.requests_refuted)
            fenced.add_metric(labels, stats.writes_fenced)
            store.add_metric(labels, stats.store_failures)
        yield from (left, version, fetches, failures, forced, requests, fenced, store)
        yield from (refused, refresh_due)

    def _upstream(self) -> Iterator[Metric]:
        meter = self._view.meter
        if meter is None:
            return
        calls = _counter(
            "wxtoken_producer_upstream_calls",
            "Upstream token calls by outcome (ok, transient, config, quota) and errcode.",
            ["app_id", "outcome", "errcode"],
        )
        for (app_id, outcome, errcode), count in sorted(meter.outcomes().items()):
            calls.add_metric([app_id, outcome, errcode], count)
        yield calls
        latency = HistogramMetricFamily(
            "wxtoken_producer_upstream_seconds", "Upstream token call latency.", labels=["app_id"]
        )
        for app_id, histogram in sorted(meter.latency().items()):
            cumulative, buckets = 0, []
            for bound, count in zip(
                (*LATENCY_BUCKETS_S, float("inf")), histogram.counts, strict=True
            ):
                cumulative += count
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
            latency.add_metric([app_id], buckets, histogram.sum_s)
        yield latency

    def _budget(self) -> Iterator[Metric]:
        budget = self._view.budget
        if budget is None:
            return
        used = GaugeMetricFamily(
            "wxtoken_producer_budget_used",
            "Request-caused refreshes (forced stable, or classic fetches) today, UTC.",
            labels=["app_id", "api"],
        )
        limit = GaugeMetricFamily(
            "wxtoken_producer_budget_limit",
            "The daily limit of the same.",
            labels=["app_id", "api"],
        )
        for app_id, api, count, most in sorted(budget.used_today()):
            used.add_metric([app_id, str(api)], count)
            limit.add_metric([app_id, str(api)], most)
        yield used
        yield limit
