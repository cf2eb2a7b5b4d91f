"""`wxtoken-gateway`: tokens over HTTP for services in any language, answered from memory."""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import ssl
import sys
from collections.abc import Iterator
from types import FrameType
from typing import TYPE_CHECKING

from consumer_lib import ConfigError
from consumer_lib.settings import load_settings
from consumer_lib.settings.usage import usage, wants_help
from producer.observability.logsetup import configure_logging

from ._routes import build_app
from ._settings import GatewaySettings
from ._wiring import make_gateway, start_metrics_listener

if TYPE_CHECKING:
    import uvicorn

log = logging.getLogger(__name__)
#: On SIGTERM uvicorn waits for open responses to end; a `/v1/stream` never does, so after
#: this long they are cut (clients reconnect elsewhere with `Last-Event-ID`). Every other
#: answer finishes well within it.
SHUTDOWN_GRACE_S = 5


SUMMARY = """\
The wxtoken HTTP gateway: serves the current access tokens, tickets and JS-SDK signatures
to services in any language, from memory (a TokenClient subscribed like any service), to
callers holding an API key (`wxtoken gateway-key add`). SIGTERM or SIGINT stops it."""
NOTES = "See docs/operating.md (Configuration) and docs/gateway.md."


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGTERM/SIGINT; returns the exit code (2 for a configuration error)."""
    argv = sys.argv[1:] if argv is None else argv
    if wants_help(argv):
        print(usage("wxtoken-gateway", SUMMARY, GatewaySettings, notes=NOTES))
        return 0
    if argv:  # configuration comes from WXTOKEN_* variables only
        print(f"wxtoken-gateway: takes no arguments (got {argv[0]!r}); see --help", file=sys.stderr)
        return 2
    import uvicorn

    try:
        settings = load_settings(GatewaySettings)
        configure_logging(settings.log_level)
        gateway = make_gateway(settings)
        metrics = start_metrics_listener(settings, gateway)
    except ConfigError as exc:
        print(f"wxtoken-gateway: configuration error: {exc}", file=sys.stderr)
        return 2
    if settings.gateway_legacy_anonymous:
        log.warning(
            "GET /accesstoken answers without an API key (WXTOKEN_GATEWAY_LEGACY_ANONYMOUS)"
        )
    try:  # before anything starts: a port in use is one line, and nothing ran
        listener = _listen(settings.gateway_host, settings.gateway_port)
    except OSError as exc:
        print(
            f"wxtoken-gateway: cannot listen on {settings.gateway_host}:{settings.gateway_port} "
            f"(WXTOKEN_GATEWAY_HOST, WXTOKEN_GATEWAY_PORT): {exc.strerror or exc}",
            file=sys.stderr,
        )
        return 1
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
        listener.getsockname()[1],
        len(gateway.keys),
        ", client certificates required" if settings.gateway_tls_client_ca_file else "",
    )
    server = uvicorn.Server(config)
    try:
        with _stopped_by_signals(server):
            server.run(sockets=[listener])
    finally:
        if metrics is not None:
            metrics.close()
    return 0


def _listen(host: str, port: int) -> socket.socket:
    """A TCP socket bound to `host`:`port` (uvicorn listens on it); `OSError` when the
    address is in use or not ours."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


@contextlib.contextmanager
def _stopped_by_signals(server: uvicorn.Server) -> Iterator[None]:
    """SIGINT and SIGTERM stop `server` gracefully and the program exits 0.

    uvicorn handles both while it serves, then re-raises the signal to the handler it
    found: Python's SIGINT handler would raise `KeyboardInterrupt` (a 30-line traceback
    after a clean shutdown). Ours only asks the server to exit (a signal during start-up
    included), so the re-raised signal ends nothing twice."""

    def on_signal(signum: int, frame: FrameType | None) -> None:
        del signum, frame
        server.should_exit = True

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


if __name__ == "__main__":
    sys.exit(main())
