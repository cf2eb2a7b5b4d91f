"""Publishing token updates on the fanout exchange, with publisher confirms.

`Publisher` owns one pika connection in its own thread (pika is not thread-safe):
`publish()` may be called from any thread and only records the update. While the broker
is away, the newest update per app and kind waits and goes out once the broker is back.
The ops CLI publishes through `declare_exchange()` and `publish_update()` on a channel of
its own.
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

from consumer_lib.amqp.outage import OutageLog
from consumer_lib.amqp.params import (
    AMQP_ERRORS,
    MESSAGE_TYPE,
    amqp_user_id,
    close_quietly,
    connection_parameters,
    describe_amqp_error,
)
from consumer_lib.backoff import Backoff
from consumer_lib.settings import TlsFiles
from consumer_lib.wire.signing import PLAIN, UpdateCodec
from consumer_lib.wire.update import TokenKind, TokenUpdate

log = logging.getLogger(__name__)


def declare_exchange(channel: BlockingChannel, exchange: str) -> None:
    """The durable fanout exchange; publishing to a missing one would close the channel."""
    channel.exchange_declare(exchange=exchange, exchange_type="fanout", durable=True)


def publish_update(
    channel: BlockingChannel,
    exchange: str,
    update: TokenUpdate,
    *,
    now_s: float,
    sender: str,
    codec: UpdateCodec = PLAIN,
) -> None:
    """Publish one update on a confirming channel; raises pika's errors on a nack or loss.

    The message expires from queues with the token, so a subscriber that was away for a
    while is not handed a pile of dead tokens.
    """
    ttl_ms = max(1, int((update.expires_at - now_s) * 1000))
    channel.basic_publish(
        exchange=exchange,
        routing_key="",
        body=codec.encode(update),
        properties=pika.BasicProperties(
            content_type="application/json",
            delivery_mode=pika.DeliveryMode.Transient,
            expiration=str(ttl_ms),
            message_id=f"{update.app_id}:{update.kind}:{update.version}",
            type=MESSAGE_TYPE,
            app_id=sender,
            timestamp=int(now_s),
            # The user this connection logged in as; the broker refuses any other.
            user_id=amqp_user_id(channel),
        ),
    )


class Publisher:
    """A background thread that keeps one confirming channel and publishes what it is given."""

    def __init__(
        self,
        amqp_url: str,
        exchange: str,
        *,
        sender: str,
        heartbeat_s: int = 30,
        reconnect_max_s: float = 5.0,
        clock: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
        codec: UpdateCodec = PLAIN,
        tls: TlsFiles | None = None,
    ) -> None:
        self._codec = codec
        self._params = connection_parameters(
            amqp_url, connection_name=sender, heartbeat_s=heartbeat_s, tls=tls
        )
        self._exchange = exchange
        self._sender = sender
        self._clock = clock
        self._backoff = Backoff(0.2, reconnect_max_s, rand=rand)
        self._pending: dict[tuple[str, TokenKind], TokenUpdate] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._thread = threading.Thread(target=self._run, name="wxtoken-publisher", daemon=True)
        self._outage = OutageLog(log, "broker")
        self.published_count = 0

    @property
    def connected(self) -> bool:
        """True while a confirming channel to the broker is open."""
        return self._connected.is_set()

    def start(self) -> Publisher:
        self._thread.start()
        return self

    def publish(self, update: TokenUpdate) -> None:
        """Queue `update` for publishing; a newer pending one for the same app wins."""
        key = (update.app_id, update.kind)
        with self._lock:
            pending = self._pending.get(key)
            if pending is None or pending.version <= update.version:
                self._pending[key] = update
        self._wake.set()

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the thread (pending updates not yet published are dropped). Idempotent."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout_s)

    # ------------------------------------------------------------ the thread
    def _run(self) -> None:
        while not self._stop.is_set():
            connection = None
            try:
                connection = pika.BlockingConnection(self._params)
                channel = connection.channel()
                channel.confirm_delivery()
                declare_exchange(channel, self._exchange)
                self._connected.set()
                self._backoff.reset()
                self._outage.recovered()
                log.info("publisher connected to the broker")
                self._pump(connection, channel)
            except AMQP_ERRORS as exc:
                delay_s = self._backoff.next_delay_s()
                self._outage.failed(describe_amqp_error(exc), delay_s)
                self._stop.wait(delay_s)
            finally:
                self._connected.clear()
                close_quietly(connection)

    def _pump(self, connection: pika.BlockingConnection, channel: BlockingChannel) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            for update in self._take_pending():
                now_s = self._clock()
                if not update.is_valid_at(now_s):
                    log.info("not publishing %s: expired while waiting", update)
                    continue
                try:
                    publish_update(
                        channel,
                        self._exchange,
                        update,
                        now_s=now_s,
                        sender=self._sender,
                        codec=self._codec,
                    )
                except pika.exceptions.NackError:
                    log.warning("broker refused %s; will retry", update)
                    self.publish(update)
                    continue
                except BaseException:
                    self.publish(update)  # keep it for the next connection
                    raise
                self.published_count += 1
                log.info("published %s", update)
            # Pumps heartbeats too; returns early when the wake event is set below.
            connection.process_data_events(time_limit=0)
            self._wake.wait(0.5)

    def _take_pending(self) -> list[TokenUpdate]:
        with self._lock:
            updates = list(self._pending.values())
            self._pending.clear()
        return updates
