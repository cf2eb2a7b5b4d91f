"""A daemon thread that owns one pika connection and consumes one exchange.

On every (re)connect it declares what it needs, binds a server-named exclusive queue to the
exchange and consumes it with auto-ack (a token update or a refresh request is only worth
acting on now: nothing is redelivered). It then pumps `process_data_events`, which also
answers heartbeats. A lost connection, a channel closed by the broker and a consumer the
broker cancelled all mean "reconnect with capped, jittered backoff", never "stop"; each
outage is logged once, with a reminder now and then, and its end. `close()` is prompt and
idempotent. pika is not thread-safe: nothing but this thread touches the connection.

Subclasses say what to declare and which exchange to bind (`_declare`), what to do with a
message (`_handle`), and may hook the moments around a connection.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from typing import Self

import pika
from pika.adapters.blocking_connection import BlockingChannel
from pika.spec import Basic, BasicProperties

from ..backoff import Backoff
from .outage import OutageLog
from .params import AMQP_ERRORS, close_quietly, describe_amqp_error

#: The shortest wait between two reconnect attempts; doubles up to the cap.
RECONNECT_BASE_S = 0.2
#: How long one `process_data_events` round may block; also how fast `close()` is.
ROUND_S = 0.5


class _Reconnect(Exception):
    """The broker cancelled our consumer or closed our channel."""


_RECONNECT_ON: tuple[type[Exception], ...] = (*AMQP_ERRORS, _Reconnect)


class ConsumerThread:
    """The connection-owning consume loop shared by the subscriber and the request listener."""

    def __init__(
        self,
        params: Sequence[pika.ConnectionParameters],
        *,
        thread_name: str,
        logger: logging.Logger,
        outage_name: str,
        reconnect_max_s: float,
        monotonic: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self._params = params
        self._log = logger
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._cancelled = False
        self._start_lock = threading.Lock()
        self._started = False
        self.last_error: str | None = None
        self._backoff = Backoff(RECONNECT_BASE_S, reconnect_max_s, rand=rand)
        self._outage = OutageLog(logger, outage_name, monotonic=monotonic)
        self._thread = threading.Thread(target=self._run, name=thread_name, daemon=True)

    # ------------------------------------------------------------ public
    @property
    def connected(self) -> bool:
        """True while consuming."""
        return self._connected.is_set()

    def wait_connected(self, timeout_s: float) -> bool:
        """Block until consuming (for tests and start-up checks)."""
        return self._connected.wait(timeout_s)

    def start(self) -> Self:
        """Start the thread; idempotent, returns at once."""
        with self._start_lock:
            if not self._started and not self._stop.is_set():
                self._started = True
                self._thread.start()
        return self

    def close(self, timeout_s: float = 2.0) -> None:
        """Stop the thread and wait up to `timeout_s` for it. Idempotent."""
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout_s)

    # ------------------------------------------------------------ hooks
    def _declare(self, channel: BlockingChannel) -> str:
        """Declare what this consumer needs; return the exchange to bind the queue to."""
        raise NotImplementedError

    def _handle(self, body: bytes, properties: BasicProperties) -> None:
        """One message, in this thread; must not raise."""
        raise NotImplementedError

    def _on_subscribed(self, connection: pika.BlockingConnection) -> None:
        """Consuming has started; `connected` turns true right after this returns."""

    def _on_disconnected(self) -> None:
        """The connection is gone (or going); runs before it is closed."""

    def _each_round(self) -> None:
        """Runs after every `process_data_events` round while connected."""

    def _wait_to_reconnect(self, delay_s: float) -> None:
        """Wait `delay_s` before the next attempt; a stop ends the wait at once."""
        self._stop.wait(delay_s)

    # ------------------------------------------------------------ the thread
    def _run(self) -> None:
        while not self._stop.is_set():
            connection = None
            try:
                connection = pika.BlockingConnection(self._params)
                channel = self._subscribe(connection)
                self._on_subscribed(connection)
                self._connected.set()
                self.last_error = None
                self._backoff.reset()
                self._outage.recovered()
                self._consume(connection, channel)
            except _RECONNECT_ON as exc:
                self._connected.clear()
                self.last_error = describe_amqp_error(exc)
                delay_s = self._backoff.next_delay_s()
                self._outage.failed(self.last_error, delay_s)
                self._wait_to_reconnect(delay_s)
            finally:
                self._connected.clear()
                self._on_disconnected()
                close_quietly(connection)

    def _subscribe(self, connection: pika.BlockingConnection) -> BlockingChannel:
        channel = connection.channel()
        exchange = self._declare(channel)
        declared = channel.queue_declare(queue="", exclusive=True, auto_delete=True)
        queue = declared.method.queue
        channel.queue_bind(queue=queue, exchange=exchange)
        self._cancelled = False
        channel.add_on_cancel_callback(self._on_cancel)
        channel.basic_consume(queue=queue, on_message_callback=self._on_message, auto_ack=True)
        return channel

    def _consume(self, connection: pika.BlockingConnection, channel: BlockingChannel) -> None:
        while not self._stop.is_set():
            connection.process_data_events(time_limit=ROUND_S)
            self._each_round()
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
        self._handle(body, properties)
