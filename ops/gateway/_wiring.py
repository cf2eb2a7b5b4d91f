"""Builds a `Gateway` from settings: one Redis client, a `TokenClient`, the keys, the
override use case (when an operator key is configured, with its audit trail) and metrics;
and starts the metrics listener (`WXTOKEN_GATEWAY_METRICS_PORT`, apart from the API's port).
Reports are audited by the producer, not here."""

from __future__ import annotations

import time
from collections.abc import Callable

from consumer_lib import ConfigError, TokenClient
from consumer_lib.snapshot import connect_redis
from consumer_lib.wire.keys import KeyLayout
from consumer_lib.wire.signing import codec_from_settings
from producer.observability.status_server import StatusServer
from producer.store.audit import AuditLog
from producer.store.tokens import TokenStore
from producer.store.upstream_failures import UpstreamErrors

from ._apikeys import KeyRing
from ._app import Gateway
from ._override import Overrider
from ._settings import GatewaySettings
from ._stream import StreamLimits
from ._tokens import TokenView


def make_gateway(settings: GatewaySettings) -> Gateway:
    """Everything wired, nothing started; raises `ConfigError` for a bad keys file or key."""
    keys = KeyRing(settings.gateway_keys_file)
    limits = StreamLimits(
        heartbeat_s=settings.gateway_stream_heartbeat_s,
        max_per_key=settings.gateway_stream_max_per_key,
        write_timeout_s=settings.gateway_stream_write_timeout_s,
    )
    if settings.gateway_upstream_url is not None:
        from ._relay import make_relay

        gateway = make_relay(settings, keys, limits)
        _add_metrics(gateway)
        return gateway
    redis_client = connect_redis(
        settings.redis_url, timeout_s=settings.redis_timeout_s, tls=settings.redis_tls
    )
    layout = KeyLayout(settings.key_prefix)
    client = TokenClient(settings, redis_client=redis_client, name="wxtoken-gateway")
    store = TokenStore(redis_client, layout, codec_from_settings(settings))
    failures = UpstreamErrors(redis_client, layout)
    view = TokenView(client, store.reader.known, last_failure=failures.read_one)
    overrider = None
    if settings.signing_key_file is not None:
        from ops.broker import broker_channel  # the broker side of `wxtoken set`

        signing_store = TokenStore(
            redis_client, layout, codec_from_settings(settings, must_sign=True)
        )
        sender = f"wxtoken-gateway/{settings.gateway_operator}"
        overrider = Overrider(
            store=signing_store,
            # Overrides are audited like `wxtoken set`'s: such a gateway logs in as wxtoken-ops.
            audit=AuditLog(redis_client, layout),
            open_publisher=lambda: broker_channel(settings, sender),
            operator=settings.gateway_operator,
            clock=time.time,
        )
    gateway = Gateway(
        client=client,
        view=view,
        keys=keys,
        overrider=overrider,
        operator=settings.gateway_operator,
        default_rate_per_s=settings.gateway_rate_per_s,
        max_body_bytes=settings.gateway_max_body_bytes,
        legacy_anonymous=settings.gateway_legacy_anonymous,
        stream_limits=limits,
    )
    _add_metrics(gateway)
    return gateway


def _add_metrics(gateway: Gateway) -> None:
    try:
        gateway.metrics = _metrics(gateway)
    except ImportError:  # prometheus-client is in the gateway extra; without it, no metrics
        gateway.metrics = None


def _metrics(gateway: Gateway) -> Callable[[], tuple[bytes, str]]:
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

    from consumer_lib.metrics import TokenClientCollector

    from ._metrics import GatewayCollector

    registry = CollectorRegistry()
    registry.register(TokenClientCollector(gateway.client))
    registry.register(GatewayCollector(gateway))
    return lambda: (generate_latest(registry), CONTENT_TYPE_LATEST)


def start_metrics_listener(settings: GatewaySettings, gateway: Gateway) -> StatusServer | None:
    """Serve `/metrics`, `/healthz` and `/readyz` on `WXTOKEN_GATEWAY_METRICS_HOST:PORT`
    (loopback by default); None when no port is set. `ConfigError` when the port cannot
    be had or prometheus-client is missing."""
    if settings.gateway_metrics_port is None:
        return None
    metrics = gateway.metrics
    if metrics is None:
        raise ConfigError(
            "WXTOKEN_GATEWAY_METRICS_PORT needs prometheus-client: pip install 'wxtoken[gateway]'"
        )

    def ready() -> tuple[bool, str]:
        held = gateway.view.valid_count()
        return held > 0, f"{held} valid token(s) held"

    try:
        server = StatusServer(
            settings.gateway_metrics_host,
            settings.gateway_metrics_port,
            metrics=metrics,
            ready=ready,
        )
    except OSError as exc:
        raise ConfigError(
            f"WXTOKEN_GATEWAY_METRICS_PORT: cannot listen on {settings.gateway_metrics_host}:"
            f"{settings.gateway_metrics_port} ({exc.strerror})"
        ) from None
    return server.start()
