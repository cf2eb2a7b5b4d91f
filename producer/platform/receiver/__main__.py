"""`wxtoken-platform-receiver`: WeChat's authorization-event URL for third-party platforms."""

from __future__ import annotations

import logging
import sys

from consumer_lib import ConfigError
from consumer_lib.settings import load_settings
from producer.observability.logsetup import configure_logging
from producer.platform.receiver._routes import build_app
from producer.platform.receiver._settings import ReceiverSettings
from producer.platform.receiver._wiring import RegistryFactory, make_receiver, open_registry

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None, registry_factory: RegistryFactory = open_registry) -> int:
    """Serve until SIGTERM/SIGINT; returns the exit code (2 for a configuration error)."""
    del argv  # configuration comes from WXTOKEN_* variables only
    import uvicorn
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.exposition import CONTENT_TYPE_LATEST

    from producer.platform.receiver._metrics import ReceiverCollector

    try:
        settings = load_settings(ReceiverSettings)
        configure_logging(settings.log_level)
        receiver, notifier = make_receiver(settings, registry_factory)
    except ConfigError as exc:
        print(f"wxtoken-platform-receiver: configuration error: {exc}", file=sys.stderr)
        return 2
    registry = CollectorRegistry()
    registry.register(ReceiverCollector(receiver, notifier))
    app = build_app(
        receiver,
        max_body_bytes=settings.receiver_max_body_bytes,
        metrics=lambda: (generate_latest(registry), CONTENT_TYPE_LATEST),
    )
    config = uvicorn.Config(
        app,
        host=settings.receiver_host,
        port=settings.receiver_port,
        log_level=settings.log_level.lower(),
        access_log=False,
        server_header=False,
    )
    log.info(
        "platform receiver on http://%s:%d for %s",
        settings.receiver_host,
        settings.receiver_port,
        ", ".join(sorted(receiver.platforms)),
    )
    uvicorn.Server(config).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
