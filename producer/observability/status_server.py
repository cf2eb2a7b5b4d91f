"""The producer's HTTP port: `/metrics` (Prometheus), `/healthz` (alive), `/readyz`.

A stdlib `ThreadingHTTPServer` in a daemon thread: scrapes and probes are rare, so no web
framework is needed. `/healthz` answers 200 while `healthy()` says so (the publisher's loop
is turning), else 503; `/readyz` answers 200 when `ready()` says so, else 503; both with
the reason as JSON. Anything else is 404. Requests are not logged.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

log = logging.getLogger(__name__)

#: (body, content type) of the metrics page.
Metrics = Callable[[], tuple[bytes, str]]
#: (ready?, why) and (healthy?, why)
Ready = Callable[[], tuple[bool, str]]


def _always_alive() -> tuple[bool, str]:
    return True, "alive"


#: How often the server's loop looks for a shutdown request.
SHUTDOWN_POLL_S = 0.05


class StatusServer:
    def __init__(
        self, host: str, port: int, *, metrics: Metrics, ready: Ready, healthy: Ready | None = None
    ) -> None:
        handler = _handler(metrics, ready, healthy or _always_alive)
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            # `shutdown()` waits for the loop's next poll: the default 0.5 s was most of a
            # clean stop's time.
            kwargs={"poll_interval": SHUTDOWN_POLL_S},
            name="status-http",
            daemon=True,
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> StatusServer:
        self._thread.start()
        log.info("metrics and health on port %d (/metrics, /healthz, /readyz)", self.port)
        return self

    def close(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()


def _handler(metrics: Metrics, ready: Ready, healthy: Ready) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "wxtoken"
        sys_version = ""

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                body, content_type = metrics()
                self._send(200, body, content_type)
            elif path == "/healthz":
                ok, why = healthy()
                if ok:
                    self._json(200, {"status": "alive"})
                else:
                    self._json(503, {"status": "unhealthy", "reason": why})
            elif path == "/readyz":
                ok, why = ready()
                self._json(
                    200 if ok else 503, {"status": "ready" if ok else "not ready", "reason": why}
                )
            else:
                self._json(404, {"error": "not_found", "reason": "no such route"})

        def _json(self, status: int, answer: dict[str, str]) -> None:
            self._send(status, json.dumps(answer).encode(), "application/json")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # probes every few seconds would drown the log

    return Handler
