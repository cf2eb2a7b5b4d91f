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
from typing import NoReturn

from ..amqp.connection import Channel, Connection, Delivery
from ..amqp.consumer import ConsumerThread
from ..amqp.params import connection_parameters
from ..errors import BrokerError
from ..settings import ClientSettings
from ..transport import OnBody

log = logging.getLogger(__name__)

#: How often, at most, the consume loop asks whether a held token's successor is overdue.
OVERDUE_CHECK_S = 1.0


def _not_attached(*args: object) -> NoReturn:
    raise RuntimeError("Subscriber is not attached to a TokenClient")


class Subscriber(ConsumerThread):
    """Consumes the exchange in a daemon thread; hands each body, with the broker-checked
    `user_id` of its publisher and the send time in its header, to the `on_body` it was
    `attach`ed to."""

    def __init__(
        self,
        settings: ClientSettings,
        *,
        connection_name: str,
        on_connected: Callable[[], None] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
    ) -> None:
        """`on_connected` runs on this thread after each subscription, once `send()` works
        (the client sends the reports that waited for the first connection). The client's
        callbacks come with `attach()`, before `start()`, as for every transport."""
        super().__init__(
            connection_parameters(
                settings.amqp_url,
                connection_name=connection_name,
                heartbeat_s=settings.heartbeat_s,
                tls=settings.amqp_tls,
            ),
            thread_name="wxtoken-subscriber",
            logger=log,
            outage_name="broker",
            reconnect_max_s=settings.reconnect_max_s,
            monotonic=monotonic,
            rand=rand,
        )
        self._settings = settings
        self._on_body: OnBody = _not_attached
        self._read_snapshot: Callable[[], None] = _not_attached
        self._snapshot_wanted: Callable[[], bool] = _not_attached
        self._on_connected = on_connected
        self._monotonic = monotonic
        self._rand = rand
        self._last_poll = -float("inf")
        self._last_overdue_check = -float("inf")
        self._connection_name = connection_name
        # The live connection, for `send()` from other threads; None while disconnected.
        self._send_lock = threading.Lock()
        self._live: Connection | None = None
        # Touched only by the subscriber thread (callbacks run there): the send channel.
        self._send_channel: Channel | None = None

    def attach(
        self,
        *,
        on_body: OnBody,
        read_snapshot: Callable[[], None],
        snapshot_wanted: Callable[[], bool],
        callbacks_idle: Callable[[float], bool],
    ) -> None:
        """The client's callbacks (`consumer_lib.transport`): each message's body goes to
        `on_body` on this thread; the consume loop reads the snapshot on (re)connect and
        when `snapshot_wanted()`."""
        del callbacks_idle  # the client waits for its callbacks itself
        self._on_body = on_body
        self._read_snapshot = read_snapshot
        self._snapshot_wanted = snapshot_wanted

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
                connection.call_threadsafe(
                    lambda: self._publish(connection, exchange, body, message_type)
                )
            except BrokerError as exc:  # closed between our check and the call
                log.debug("not sending %s: %s", message_type, exc)
                return False
        return True

    def _publish(
        self, connection: Connection, exchange: str, body: bytes, message_type: str
    ) -> None:
        """Runs in the subscriber thread; never raises into pika's loop."""
        try:
            channel = self._send_channel
            if channel is None or not channel.is_open:
                channel = self._send_channel = connection.channel()
            channel.publish_small(
                exchange,
                body,
                message_type=message_type,
                sender=self._connection_name,
                now_s=time.time(),
            )
        except BrokerError as exc:
            log.warning("sending %s to %s failed: %s", message_type, exchange, exc)

    # ------------------------------------------------------------ ConsumerThread hooks
    def _declare(self, channel: Channel) -> str:
        # Passive: subscribers need no right to create (or delete) the exchange.
        channel.check_exchange(self._settings.exchange)
        return self._settings.exchange

    def _handle(self, delivery: Delivery) -> None:
        self._on_body(delivery.body, delivery.user_id, delivery.sent_s)

    def _on_subscribed(self, connection: Connection) -> None:
        with self._send_lock:
            self._live = connection
        log.info("subscribed to exchange %s", self._settings.exchange)
        if self._on_connected is not None:  # once consuming, when `send()` works
            connection.call_soon(self._on_connected)
        # Consuming has started, so nothing published from now on can be missed.
        self._poll_snapshot(force=True)

    def _on_disconnected(self) -> None:
        with self._send_lock:
            self._live = None
        self._send_channel = None

    def _each_round(self) -> None:
        # Rounds end after every message; looking over every held token each time would
        # cost a core with thousands of apps. Once a second is plenty for "overdue".
        now = self._monotonic()
        if now - self._last_overdue_check < OVERDUE_CHECK_S:
            return
        self._last_overdue_check = now
        if self._snapshot_wanted():
            self._poll_snapshot(force=False)

    def _wait_to_reconnect(self, delay_s: float) -> None:
        """Wait `delay_s`, reading the snapshot whenever a (jittered) poll is due."""
        deadline = self._monotonic() + delay_s
        while not self._stop.is_set():
            self._poll_snapshot(force=False)
            remaining_s = deadline - self._monotonic()
            if remaining_s <= 0:
                return
            next_poll_s = self._last_poll + self._poll_interval_s() - self._monotonic()
            self._stop.wait(max(0.01, min(remaining_s, next_poll_s)))

    # ------------------------------------------------------------ the snapshot
    def _poll_interval_s(self) -> float:
        return self._settings.poll_interval_s * (0.5 + self._rand())

    def _poll_snapshot(self, *, force: bool) -> None:
        now = self._monotonic()
        if not force and now - self._last_poll < self._settings.poll_interval_s * 0.5:
            return
        self._last_poll = now
        self._read_snapshot()
