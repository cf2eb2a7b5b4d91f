"""`GatewayStream`: a `Transport` that takes updates from a gateway's `GET /v1/stream`.

One daemon thread holds one HTTP(S) connection (the standard library's `http.client`: no
dependency) to the stream of every app the API key may use, in every kind, and hands each
event's data (the producer's signed envelope, byte for byte) to the client exactly as a
broker message: the same decoding, the same signature checks, the same cache. The stream's
first events are the gateway's held updates (the snapshot); on reconnect the last event id
goes back as `Last-Event-ID`, so only newer versions are sent. A lost connection, a refusal
or a silence longer than `read_timeout_s` (the gateway sends heartbeats) means reconnect,
with capped, jittered backoff (`backoff.Backoff`). `report_token()` posts a refused token
to the gateway's report route (the key needs the `report` scope).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import random
import socket
import ssl
import threading
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote, urlsplit

from ..backoff import Backoff
from ..settings.gateway import GatewayClientSettings
from ..settings.tls import TlsFiles, tls_context
from ..transport import OnBody
from ..wire.update import TokenKind
from .sse import MAX_LINE_BYTES, SseError, SseParser

log = logging.getLogger(__name__)

#: The first reconnect waits about this long; later ones double up to the cap.
RECONNECT_BASE_S = 0.25
#: Opening a connection and a report's round trip may take this long.
CONNECT_TIMEOUT_S = 10.0
_ALL_KINDS = ",".join(k.value for k in TokenKind)


class GatewayStream:
    """The background side of a `TokenClient` fed over HTTP (see the module docstring)."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        ca_file: str | None = None,
        read_timeout_s: float = 45.0,
        reconnect_max_s: float = 3.0,
        name: str = "wxtoken-client",
        rand: Callable[[], float] = random.random,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("the gateway URL must be http:// or https:// with a host")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self._prefix = parts.path.rstrip("/")
        self._api_key = api_key
        self._ssl = (
            tls_context(TlsFiles(ca_file=None if ca_file is None else Path(ca_file)))
            if self._https
            else None
        )
        self._read_timeout_s = read_timeout_s
        self._reconnect_max_s = max(reconnect_max_s, RECONNECT_BASE_S)
        self._name = name
        self._rand = rand
        self._on_body: OnBody | None = None
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._thread: threading.Thread | None = None
        self._live: socket.socket | None = None
        self._live_lock = threading.Lock()
        #: The cursor of the last event, sent as `Last-Event-ID` on reconnect.
        self.last_event_id: str | None = None
        self._last_error: str | None = None
        #: The gateway's answer when it refuses our API key (401/403): a configuration error.
        self._refused: str | None = None
        #: Connections opened, and events handed on (for tests and figures).
        self.connects = 0
        self.events = 0

    @classmethod
    def from_settings(cls, settings: GatewayClientSettings, *, name: str) -> GatewayStream:
        if settings.gateway_url is None or settings.gateway_api_key is None:
            raise ValueError("WXTOKEN_GATEWAY_URL and WXTOKEN_GATEWAY_API_KEY are needed")
        return cls(
            settings.gateway_url,
            settings.gateway_api_key.get_secret_value(),
            ca_file=None if settings.gateway_ca_file is None else str(settings.gateway_ca_file),
            read_timeout_s=settings.gateway_read_timeout_s,
            reconnect_max_s=settings.reconnect_max_s,
            name=name,
        )

    # ------------------------------------------------------------ Transport
    def attach(
        self,
        *,
        on_body: OnBody,
        read_snapshot: Callable[[], None],
        snapshot_wanted: Callable[[], bool],
        callbacks_idle: Callable[[float], bool],
    ) -> None:
        """The stream's first events are the snapshot: there is no other to read."""
        self._on_body = on_body

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def last_error(self) -> str | None:
        return self._last_error

    @property
    def login_refused(self) -> str | None:
        """Why the gateway refuses our API key (401/403: a configuration error); None
        otherwise."""
        return self._refused

    def start(self) -> GatewayStream:
        """Start the thread (again in a forked child, whose parent's thread is not here)."""
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._connected.clear()
            self._live_lock = threading.Lock()
            self._thread = threading.Thread(
                target=self._run, name="wxtoken-gateway-stream", daemon=True
            )
            self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self._drop_connection()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def wait_connected(self, timeout_s: float) -> bool:
        return self._connected.wait(timeout_s)

    def send(self, exchange: str, body: bytes, message_type: str) -> bool:
        """No broker here: refresh requests go through `report_token` instead."""
        return False

    def report_token(self, app_id: str, token: str, kind: TokenKind, reason: str | None) -> bool:
        """POST the refused token to the gateway's report route; True when accepted (202).
        Only the access token has a report route; a ticket is not reported (False)."""
        if kind is not TokenKind.ACCESS_TOKEN:
            return False
        body = json.dumps({"access_token": token, "reason": reason or f"client {self._name}"})
        path = f"{self._prefix}/v1/apps/{quote(app_id, safe='')}/access_token:report"
        connection = self._connection(CONNECT_TIMEOUT_S)
        try:
            connection.request(
                "POST", path, body=body.encode(), headers=self._headers("application/json")
            )
            response = connection.getresponse()
            answer = response.read(4096)
        except (OSError, http.client.HTTPException) as exc:
            log.warning("reporting %s rejected to the gateway failed: %s", app_id, _reason(exc))
            return False
        finally:
            connection.close()
        if response.status != 202:
            log.warning(
                "the gateway refused the report of %s: HTTP %d %s",
                app_id,
                response.status,
                _error_reason(answer),
            )
            return False
        return True

    # ------------------------------------------------------------ the thread
    def _run(self) -> None:
        backoff = Backoff(RECONNECT_BASE_S, self._reconnect_max_s, rand=self._rand)
        while not self._stop.is_set():
            try:
                self._stream(backoff)
            except (OSError, http.client.HTTPException, SseError) as exc:
                self._failed(_reason(exc))
            finally:
                self._connected.clear()
                self._drop_connection()
            if not self._stop.is_set():
                self._stop.wait(backoff.next_delay_s())

    def _stream(self, backoff: Backoff) -> None:
        connection = self._connection(self._read_timeout_s)
        connection.connect()
        with self._live_lock:
            if self._stop.is_set():
                connection.close()
                return
            # The socket itself: `http.client` hands it to the response and forgets it.
            self._live = connection.sock
        path = f"{self._prefix}/v1/stream?apps=*&kinds={_ALL_KINDS}"
        headers = self._headers("text/event-stream")
        if self.last_event_id is not None:
            headers["Last-Event-ID"] = self.last_event_id
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        if response.status != 200:
            reason = f"HTTP {response.status}: {_error_reason(response.read(4096))}"
            if response.status in (401, 403):
                self._refused = (
                    f"the gateway refuses WXTOKEN_GATEWAY_API_KEY ({reason}): check the key "
                    "and its scopes"
                )
            self._failed(reason)
            return
        self.connects += 1
        if self._last_error is not None:
            log.info("gateway stream open again (%s)", self._host)
        self._last_error = None
        self._refused = None
        self._connected.set()
        backoff.reset()
        parser = SseParser(self.last_event_id)
        on_body = self._on_body
        while not self._stop.is_set():
            line = response.readline(MAX_LINE_BYTES + 1)
            if not line:
                raise ConnectionError("the gateway closed the stream")
            event = parser.feed(line)
            if event is not None and event.event == "update" and on_body is not None:
                self.events += 1
                on_body(event.data, None, None)  # no send time: no clock sample
                self.last_event_id = parser.last_id

    def _failed(self, reason: str) -> None:
        if self._stop.is_set():
            return
        if reason != self._last_error:
            log.warning("gateway stream %s: %s; reconnecting", self._host, reason)
        self._last_error = reason

    def _connection(self, timeout_s: float) -> http.client.HTTPConnection:
        if self._https:
            return http.client.HTTPSConnection(
                self._host, self._port, timeout=timeout_s, context=self._ssl
            )
        return http.client.HTTPConnection(self._host, self._port, timeout=timeout_s)

    def _headers(self, accept: str) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {self._api_key}",
            "Accept": accept,
            "User-Agent": f"wxtoken-consumer_lib ({self._name})",
        }

    def _drop_connection(self) -> None:
        """Close the live connection; from another thread, this ends a blocked read."""
        with self._live_lock:
            sock, self._live = self._live, None
        if sock is None:
            return
        with contextlib.suppress(OSError):  # already closed
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return f"TLS: {exc.reason or exc}"
    if isinstance(exc, TimeoutError | socket.timeout):
        return "no byte (not even a heartbeat) within the read timeout"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _error_reason(answer: bytes) -> str:
    """The gateway's `reason` (never a key or token), else a short generic text."""
    try:
        reason = json.loads(answer).get("reason")
    except (ValueError, AttributeError):
        reason = None
    return str(reason)[:200] if reason else "(no reason given)"
