"""Wiring the producer's metrics and health port (`WXTOKEN_METRICS_PORT`) in two calls:

meter = metered_upstream(settings)             # None when the port is not set
service = ProducerService(settings, apps, fetcher=meter)
status = start_status(settings, service, meter)  # after service.start(); close() it
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from consumer_lib.errors import ConfigError
from producer.settings import ProducerSettings
from producer.upstream.meter import MeteredFetcher
from producer.upstream.routing import Upstream

if TYPE_CHECKING:
    from producer.observability.status_server import StatusServer
    from producer.service import ProducerService


def metered_upstream(settings: ProducerSettings) -> MeteredFetcher | None:
    """The `Upstream` the service would build, wrapped to count calls; None if off."""
    if settings.metrics_port is None:
        return None
    return MeteredFetcher(Upstream.from_settings(settings))


def start_status(
    settings: ProducerSettings, service: ProducerService, meter: MeteredFetcher | None
) -> StatusServer | None:
    """Serve /metrics, /healthz, /readyz; `ConfigError` when the port cannot be had."""
    if settings.metrics_port is None:
        return None
    try:
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

        from producer.observability.metrics import ProducerCollector, is_healthy, is_ready, view_of
        from producer.observability.status_server import StatusServer
    except ImportError:
        raise ConfigError(
            "WXTOKEN_METRICS_PORT needs prometheus-client: pip install 'wxtoken[metrics]'"
        ) from None
    view = view_of(service, meter)
    registry = CollectorRegistry()
    registry.register(ProducerCollector(view))
    if service.platform is not None:
        from producer.platform.metrics import PlatformCollector

        registry.register(PlatformCollector(service.platform))
    try:
        server = StatusServer(
            settings.metrics_host,
            settings.metrics_port,
            metrics=lambda: (generate_latest(registry), CONTENT_TYPE_LATEST),
            ready=lambda: is_ready(view),
            healthy=lambda: is_healthy(view),
        )
    except OSError as exc:
        raise ConfigError(
            f"WXTOKEN_METRICS_PORT: cannot listen on {settings.metrics_host}:"
            f"{settings.metrics_port} ({exc.strerror})"
        ) from None
    return server.start()
