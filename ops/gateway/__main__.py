"""`wxtoken-gateway`: tokens over HTTP for services in any language, answered from memory."""

from __future__ import annotations

import logging
import ssl
import sys

from consumer_lib import ConfigError
from consumer_lib.settings import load_settings
from producer.logsetup import configure_logging

from ._routes import build_app
from ._settings import GatewaySettings
from ._wiring import make_gateway

log = logging.getLogger("ops.gateway")
#: On SIGTERM uvicorn waits for open responses to end; a `/v1/stream` never does, so after
#: this long they are cut (clients reconnect elsewhere with `Last-Event-ID`). Every other
#: answer finishes well within it.
SHUTDOWN_GRACE_S = 5


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGTERM/SIGINT; returns the exit code (2 for a configuration error)."""
    del argv  # configuration comes from WXTOKEN_* variables only
    import uvicorn

    try:
        settings = load_settings(GatewaySettings)
        configure_logging(settings.log_level)
        gateway = make_gateway(settings)
    except ConfigError as exc:
        print(f"wxtoken-gateway: configuration error: {exc}", file=sys.stderr)
        return 2
    if settings.gateway_legacy_anonymous:
        log.warning(
            "GET /accesstoken answers without an API key (WXTOKEN_GATEWAY_LEGACY_ANONYMOUS)"
        )
    tls = settings.gateway_tls_cert_file is not None
    config = uvicorn.Config(
        build_app(gateway),
        host=settings.gateway_host,
        port=settings.gateway_port,
        log_level=settings.log_level.lower(),
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
        ssl_certfile=settings.gateway_tls_cert_file,
        ssl_keyfile=settings.gateway_tls_key_file,
        ssl_ca_certs=settings.gateway_tls_client_ca_file,
        ssl_cert_reqs=(
            ssl.CERT_REQUIRED if settings.gateway_tls_client_ca_file is not None else ssl.CERT_NONE
        ),
    )
    log.info(
        "gateway on %s://%s:%d with %d key(s)%s",
        "https" if tls else "http",
        settings.gateway_host,
        settings.gateway_port,
        len(gateway.keys),
        ", client certificates required" if settings.gateway_tls_client_ca_file else "",
    )
    uvicorn.Server(config).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
