"""Receiving refresh requests: a daemon thread consuming the requests exchange.

`RequestListener` owns one pika connection in its own thread, like `Publisher` and the
client's `Subscriber`. On every (re)connect it declares the requests exchange (the
producer may create it), a server-named exclusive queue bound to it, and consumes with
auto-ack: a request is only worth acting on now, so nothing is redelivered. Each body is
decoded with `RefreshRequest.decode`; an invalid one is counted and logged in one line,
a valid one is handed to `on_request`, whose exceptions are logged and never stop the
thread. A lost connection, a closed channel or a cancelled consumer means "reconnect with
capped, jittered backoff".
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel
from pika.spec import Basic, BasicProperties

from consumer_lib._amqp import (
    AMQP_ERRORS,
    close_quietly,
    connection_parameters,
    describe_amqp_error,
)
from consumer_lib._backoff import Backoff
from consumer_lib._errors import InvalidUpdate
from consumer_lib._outage import OutageLog
from consumer_lib._refresh_request import (
    RefreshRequest,
    declare_requests_exchange,
    requests_exchange,
)
from consumer_lib._settings import TlsFiles

log = logging.getLogger(__name__)


class _Reconnect(Exception):
    """The broker cancelled our consumer or closed our channel."""


_RECONNECT_ON: tuple[type[Exception], ...] = (*AMQP_ERRORS, _Reconnect)


@dataclass
class RequestListenerStats:
    """Messages received, those that were not valid requests, and handler failures."""

    received: int = 0
    rejected: int = 0
    handler_errors: int = 0


class RequestListener:
    """Consumes the requests exchange of `exchange` in a daemon thread."""

    def __init__(
        self,
        amqp_url: str,
        exchange: str,
        *,
        on_request: Callable[[RefreshRequest], None],
        connection_name: str,
        heartbeat_s: int = 30,
        reconnect_max_s: float = 5.0,
        rand: Callable[[], float] = random.random,
        tls: TlsFiles | None = None,
    ) -> None:
        self._params = connection_parameters(
            amqp_url, connection_name=connection_name, heartbeat_s=heartbeat_s, tls=tls
        )
        self._exchange = exchange
        self._on_request = on_request
        self._backoff = Backoff(0.2, reconnect_max_s, rand=rand)
        self._outage = OutageLog(log, "broker (refresh requests)")
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._cancelled = False
        self._started = False
        self._lock = threading.Lock()
        self.last_error: str | None = None
        self.stats = RequestListenerStats()
        self._thread = threading.Thread(
            target=self._run, name="wxtoken-request-listener", daemon=True
        )

    @property
    def exchange(self) -> str:
        """The name of the exchange consumed (the requests exchange)."""
        return requests_exchange(self._exchange)

    @property
    def connected(self) -> bool:
        """True while consuming from the requests exchange."""
        return self._connected.is_set()

    def wait_connected(self, timeout_s: float) -> bool:
        """Block until consuming (for tests and start-up checks)."""
        return self._connected.wait(timeout_s)

    def start(self) -> RequestListener:
        """Start the thread (idempotent); returns at once."""
        with self._lock:
            if not self._started and not self._stop.is_set():
                self._started = True
                self._thread.start()
        return self

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the thread and wait up to `timeout_s` for it. Idempotent."""
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout_s)

    # ------------------------------------------------------------ the thread
    def _run(self) -> None:
        while not self._stop.is_set():
            connection = None
            try:
                connection = pika.BlockingConnection(self._params)
                channel = self._subscribe(connection)
                self._connected.set()
                self.last_error = None
                self._backoff.reset()
                self._outage.recovered()
                log.info("listening for refresh requests on %s", self.exchange)
                self._consume(connection, channel)
            except _RECONNECT_ON as exc:
                self._connected.clear()
                self.last_error = describe_amqp_error(exc)
                delay_s = self._backoff.next_delay_s()
                self._outage.failed(self.last_error, delay_s)
                self._stop.wait(delay_s)
            finally:
                self._connected.clear()
                close_quietly(connection)

    def _subscribe(self, connection: pika.BlockingConnection) -> BlockingChannel:
        channel = connection.channel()
        declare_requests_exchange(channel, self._exchange)
        declared = channel.queue_declare(queue="", exclusive=True, auto_delete=True)
        queue = declared.method.queue
        channel.queue_bind(queue=queue, exchange=self.exchange)
        self._cancelled = False
        channel.add_on_cancel_callback(self._on_cancel)
        channel.basic_consume(queue=queue, on_message_callback=self._on_message, auto_ack=True)
        return channel

    def _consume(self, connection: pika.BlockingConnection, channel: BlockingChannel) -> None:
        while not self._stop.is_set():
            connection.process_data_events(time_limit=0.5)
            if self._cancelled:
                raise _Reconnect("consumer cancelled by the broker")
            if not channel.is_open:
                raise _Reconnect("channel closed by the broker")

    def _on_cancel(self, frame: object) -> None:
        del frame
        self._cancelled = True

    def _on_message(
        self,
        channel: BlockingChannel,
        method: Basic.Deliver,
        properties: BasicProperties,
        body: bytes,
    ) -> None:
        del channel, method
        self.stats.received += 1
        try:
            request = RefreshRequest.decode(body)
        except InvalidUpdate as exc:
            self.stats.rejected += 1
            sender = str(properties.app_id or "unknown sender")[:64]
            log.warning("rejected a message from %r: %s", sender, exc)
            return
        log.info("refresh request %s", request)
        try:
            self._on_request(request)
        except Exception:
            self.stats.handler_errors += 1
            log.exception("handling refresh request %s failed", request)
