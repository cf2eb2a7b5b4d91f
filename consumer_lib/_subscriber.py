"""The subscriber thread: the one owner of the client's pika connection.

On every (re)connect it declares a server-named exclusive queue, binds it to the fanout
exchange, starts consuming, and only then reads the Redis snapshot, so no update can fall
between the two. While the broker is away it polls the snapshot (jittered) and reconnects
with capped, jittered backoff. A consumer cancelled by the broker, a closed channel and a
lost connection all mean "reconnect", never "stop". While connected it still reads the
snapshot when `snapshot_wanted()` says so: a held token nearing expiry with no successor
pushed means a publish was lost somewhere, and Redis may have the successor.

`send()` lets any thread publish a small message (a refresh request) on this connection:
the publish is handed to the subscriber thread with `add_callback_threadsafe`, pika's one
thread-safe call, and goes out on a second channel of its own, so a broker that closes it
(a missing exchange) never disturbs consuming.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel
from pika.spec import Basic, BasicProperties

from ._amqp import (
    AMQP_ERRORS,
    amqp_user_id,
    close_quietly,
    connection_parameters,
    describe_amqp_error,
)
from ._backoff import Backoff
from ._outage import OutageLog
from ._refresh_request import REQUEST_TTL_MS
from ._settings import ClientSettings

log = logging.getLogger(__name__)


class _Reconnect(Exception):
    """The broker cancelled our consumer or closed our channel."""


_RECONNECT_ON: tuple[type[Exception], ...] = (*AMQP_ERRORS, _Reconnect)


class Subscriber:
    """Consumes the exchange in a daemon thread; hands each body, with the broker-checked
    `user_id` of its publisher, to `on_body`."""

    def __init__(
        self,
        settings: ClientSettings,
        *,
        on_body: Callable[[bytes, str | None], None],
        read_snapshot: Callable[[], None],
        snapshot_wanted: Callable[[], bool],
        connection_name: str,
        monotonic: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self._settings = settings
        self._params = connection_parameters(
            settings.amqp_url,
            connection_name=connection_name,
            heartbeat_s=settings.heartbeat_s,
            tls=settings.amqp_tls,
        )
        self._on_body = on_body
        self._read_snapshot = read_snapshot
        self._snapshot_wanted = snapshot_wanted
        self._monotonic = monotonic
        self._rand = rand
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._cancelled = False
        self._last_poll = -float("inf")
        self.last_error: str | None = None
        self._outage = OutageLog(log, "broker", monotonic=monotonic)
        self._connection_name = connection_name
        # The live connection, for `send()` from other threads; None while disconnected.
        self._send_lock = threading.Lock()
        self._live: pika.BlockingConnection | None = None
        # Touched only by the subscriber thread (callbacks run there): the send channel.
        self._send_channel: BlockingChannel | None = None
        self._backoff = Backoff(0.2, settings.reconnect_max_s, rand=rand)
        self._thread = threading.Thread(target=self._run, name="wxtoken-subscriber", daemon=True)

    @property
    def connected(self) -> bool:
        """True while consuming from the exchange."""
        return self._connected.is_set()

    def wait_connected(self, timeout_s: float) -> bool:
        return self._connected.wait(timeout_s)

    def start(self) -> None:
        self._thread.start()

    def close(self, timeout_s: float = 2.0) -> None:
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout_s)

    def send(self, exchange: str, body: bytes, message_type: str) -> bool:
        """Publish `body` on `exchange` from the subscriber thread; False when disconnected.

        Callable from any thread. True means the publish was scheduled, not delivered: it is
        transient, not mandatory (no queue bound is fine) and expires after
        `REQUEST_TTL_MS`. A failure is logged at WARNING by the subscriber thread.
        """
        with self._send_lock:
            connection = self._live
            if connection is None or not self._connected.is_set():
                return False
            try:
                connection.add_callback_threadsafe(
                    lambda: self._publish(connection, exchange, body, message_type)
                )
            except AMQP_ERRORS as exc:  # closed between our check and the call
                log.debug("not sending %s: %s", message_type, describe_amqp_error(exc))
                return False
        return True

    def _publish(
        self, connection: pika.BlockingConnection, exchange: str, body: bytes, message_type: str
    ) -> None:
        """Runs in the subscriber thread; never raises into pika's loop."""
        try:
            channel = self._send_channel
            if channel is None or not channel.is_open:
                channel = self._send_channel = connection.channel()
            channel.basic_publish(
                exchange=exchange,
                routing_key="",
                body=body,
                properties=BasicProperties(
                    content_type="application/json",
                    delivery_mode=pika.DeliveryMode.Transient,
                    expiration=str(REQUEST_TTL_MS),
                    type=message_type,
                    app_id=self._connection_name[:128],
                    timestamp=int(time.time()),
                    user_id=amqp_user_id(channel),
                ),
                mandatory=False,
            )
        except AMQP_ERRORS as exc:
            log.warning(
                "sending %s to %s failed: %s", message_type, exchange, describe_amqp_error(exc)
            )

    # ------------------------------------------------------------ the thread
    def _run(self) -> None:
        while not self._stop.is_set():
            connection = None
            try:
                connection = pika.BlockingConnection(self._params)
                channel = self._subscribe(connection)
                with self._send_lock:
                    self._live = connection
                self._connected.set()
                self.last_error = None
                self._backoff.reset()
                self._outage.recovered()
                log.info("subscribed to exchange %s", self._settings.exchange)
                self._poll_snapshot(force=True)
                self._consume(connection, channel)
            except _RECONNECT_ON as exc:
                self._connected.clear()
                self.last_error = describe_amqp_error(exc)
                delay_s = self._backoff.next_delay_s()
                self._outage.failed(self.last_error, delay_s)
                self._wait_polling(delay_s)
            finally:
                with self._send_lock:
                    self._live = None
                self._connected.clear()
                self._send_channel = None
                close_quietly(connection)

    def _subscribe(self, connection: pika.BlockingConnection) -> BlockingChannel:
        channel = connection.channel()
        # Passive: subscribers need no right to create (or delete) the exchange.
        channel.exchange_declare(exchange=self._settings.exchange, passive=True)
        declared = channel.queue_declare(queue="", exclusive=True, auto_delete=True)
        queue = declared.method.queue
        channel.queue_bind(queue=queue, exchange=self._settings.exchange)
        self._cancelled = False
        channel.add_on_cancel_callback(self._on_cancel)
        channel.basic_consume(queue=queue, on_message_callback=self._on_message, auto_ack=True)
        return channel

    def _consume(self, connection: pika.BlockingConnection, channel: BlockingChannel) -> None:
        while not self._stop.is_set():
            connection.process_data_events(time_limit=0.5)
            if self._snapshot_wanted():
                self._poll_snapshot(force=False)
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
        self._on_body(body, properties.user_id)

    def _wait_polling(self, delay_s: float) -> None:
        """Wait `delay_s`, reading the snapshot whenever a (jittered) poll is due."""
        deadline = self._monotonic() + delay_s
        while not self._stop.is_set():
            self._poll_snapshot(force=False)
            remaining_s = deadline - self._monotonic()
            if remaining_s <= 0:
                return
            next_poll_s = self._last_poll + self._poll_interval_s() - self._monotonic()
            self._stop.wait(max(0.01, min(remaining_s, next_poll_s)))

    def _poll_interval_s(self) -> float:
        return self._settings.poll_interval_s * (0.5 + self._rand())

    def _poll_snapshot(self, *, force: bool) -> None:
        now = self._monotonic()
        if not force and now - self._last_poll < self._settings.poll_interval_s * 0.5:
            return
        self._last_poll = now
        self._read_snapshot()
