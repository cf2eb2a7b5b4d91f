"""A stand-in gateway for `GatewayStream`'s tests: `/v1/stream` serves what the test
pushes (as SSE events), `:report` records what it gets; both record the headers."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FakeGateway:
    def __init__(self) -> None:
        self.events: list[tuple[str, bytes]] = []  # (id, data) in push order
        self.stream_headers: list[dict[str, str]] = []
        self.reports: list[tuple[str, dict[str, Any]]] = []
        self.status = 200
        self._changed = threading.Condition()
        self._cut = 0  # open streams end when this grows
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                fake._stream(self)

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = json.loads(self.rfile.read(length))
                fake.reports.append((self.path, {**body, "auth": self.headers["authorization"]}))
                answer = b'{"reported":true}'
                self.send_response(202)
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def push(self, event_id: str, data: bytes) -> None:
        with self._changed:
            self.events.append((event_id, data))
            self._changed.notify_all()

    def cut(self) -> None:
        """End every open stream (the client reconnects)."""
        with self._changed:
            self._cut += 1
            self._changed.notify_all()

    def close(self) -> None:
        self.cut()
        self.server.shutdown()
        self.server.server_close()

    def _stream(self, handler: BaseHTTPRequestHandler) -> None:
        headers = {k.lower(): v for k, v in handler.headers.items()}
        self.stream_headers.append({**headers, "x-path": handler.path})
        if self.status != 200:
            answer = b'{"error":"unauthorized","reason":"unknown API key"}'
            handler.send_response(self.status)
            handler.send_header("content-length", str(len(answer)))
            handler.end_headers()
            handler.wfile.write(answer)
            return
        handler.send_response(200)
        handler.send_header("content-type", "text/event-stream")
        handler.send_header("connection", "close")
        handler.end_headers()
        resume = handler.headers.get("last-event-id")
        sent = 0
        if resume is not None:  # like the gateway: only what came after that id
            ids = [event_id for event_id, _ in self.events]
            sent = ids.index(resume) + 1 if resume in ids else 0
        with self._changed:
            cut = self._cut
        try:
            handler.wfile.write(b"retry: 100\n\n")
            while True:
                with self._changed:
                    self._changed.wait_for(
                        lambda n=sent: len(self.events) > n or self._cut != cut  # type: ignore[misc]
                    )
                    if self._cut != cut:
                        return
                    pending = self.events[sent:]
                for event_id, data in pending:
                    handler.wfile.write(
                        b"id: " + event_id.encode() + b"\nevent: update\ndata: " + data + b"\n\n"
                    )
                    sent += 1
                handler.wfile.flush()
        except OSError:
            return
