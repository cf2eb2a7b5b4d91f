"""A daemon thread that owns one pika connection and consumes one exchange.

On every (re)connect it declares what it needs, binds a server-named exclusive queue to the
exchange and consumes it with auto-ack (a token update or a refresh request is only worth
acting on now: nothing is redelivered). It then pumps `process_data_events`, which also
answers heartbeats. A lost connection, a channel closed by the broker and a consumer the
broker cancelled all mean "reconnect with capped, jittered backoff", never "stop"; each
outage is logged once in words, with a reminder now and then, and its end. A refused login
is an ERROR naming the user and WXTOKEN_AMQP_URL (`login_refused` says it until the broker
accepts), retried every `LOGIN_RETRY_S`. `close()` is prompt and
idempotent. pika is not thread-safe: nothing but this thread touches the connection.

Subclasses say what to declare and which exchange to bind (`_declare`), what to do with a
message (`_handle`), and may hook the moments around a connection.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from typing import Self

import pika

from ..backoff import Backoff
from ..errors import BrokerError, BrokerLoginRefused
from ..outage import OutageLog
from .connection import Channel, Connection, Delivery
from .errors import in_words

#: The shortest wait between two reconnect attempts; doubles up to the cap.
RECONNECT_BASE_S = 0.2
#: A refused login is a configuration error: tried again this slowly (at least), so a
#: password fixed on the broker is picked up without a restart.
LOGIN_RETRY_S = 15.0
#: How often the loop checks its channel and runs `_each_round` while no message comes.
ROUND_S = 0.5


def _nothing() -> None:
    """Scheduled only to make the thread's wait return."""


class _Reconnect(BrokerError):
    """The broker cancelled our consumer or closed our channel."""


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
        #: Why the broker refuses our login (a configuration error), None once it accepts.
        self.login_refused: str | None = None
        self._backoff = Backoff(RECONNECT_BASE_S, reconnect_max_s, rand=rand)
        self._outage = OutageLog(logger, outage_name, monotonic=monotonic)
        self._thread = threading.Thread(target=self._run, name=thread_name, daemon=True)
        self._round_due = False  # set by the round timer, in this thread
        self._waker_lock = threading.Lock()
        self._waker: Connection | None = None  # the live connection, for close()

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
        with self._waker_lock:
            waker = self._waker
        if waker is not None:
            with contextlib.suppress(BrokerError):  # closed already: nothing to wake
                waker.call_threadsafe(_nothing)
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout_s)

    # ------------------------------------------------------------ hooks
    def _declare(self, channel: Channel) -> str:
        """Declare what this consumer needs; return the exchange to bind the queue to."""
        raise NotImplementedError

    def _handle(self, delivery: Delivery) -> None:
        """One message, in this thread; must not raise."""
        raise NotImplementedError

    def _on_subscribed(self, connection: Connection) -> None:
        """Consuming has started; `connected` turns true right after this returns."""

    def _on_disconnected(self) -> None:
        """The connection is gone (or going); runs before it is closed."""

    def _each_round(self) -> None:
        """Runs every `ROUND_S` or so while connected."""

    def _wait_to_reconnect(self, delay_s: float) -> None:
        """Wait `delay_s` before the next attempt; a stop ends the wait at once."""
        self._stop.wait(delay_s)

    # ------------------------------------------------------------ the thread
    def _run(self) -> None:
        while not self._stop.is_set():
            connection = None
            try:
                connection = Connection.open(self._params, what="connecting to the broker")
                channel = self._subscribe(connection)
                self._on_subscribed(connection)
                self._connected.set()
                self.last_error = self.login_refused = None
                self._backoff.reset()
                self._outage.succeeded()
                self._consume(connection, channel)
            except BrokerLoginRefused as exc:
                self._connected.clear()
                self.last_error = self.login_refused = str(exc)
                delay_s = max(LOGIN_RETRY_S, self._backoff.next_delay_s())
                self._outage.refused(self.last_error, delay_s)
                self._wait_to_reconnect(delay_s)
            except BrokerError as exc:
                self._connected.clear()
                self.last_error = str(exc)
                delay_s = self._backoff.next_delay_s()
                self._outage.failed(in_words(exc), delay_s, detail=self.last_error)
                self._wait_to_reconnect(delay_s)
            finally:
                self._connected.clear()
                self._on_disconnected()
                if connection is not None:
                    connection.close()

    def _subscribe(self, connection: Connection) -> Channel:
        channel = connection.channel()
        exchange = self._declare(channel)
        self._cancelled = False
        channel.subscribe(exchange, self._handle, on_cancel=self._on_cancel)
        return channel

    def _consume(self, connection: Connection, channel: Channel) -> None:
        """Block in pika until a message, the round timer or `close()`: no timer per
        message, so a message costs only its own handling."""

        def round_due() -> None:
            self._round_due = True
            connection.call_later(ROUND_S, round_due)

        connection.call_later(ROUND_S, round_due)
        with self._waker_lock:
            self._waker = connection
        try:
            self._consume_until_stopped(connection, channel)
        finally:
            with self._waker_lock:
                self._waker = None

    def _consume_until_stopped(self, connection: Connection, channel: Channel) -> None:
        while not self._stop.is_set():
            connection.process_events(None)
            if not self._round_due:
                continue
            self._round_due = False
            self._each_round()
            if self._cancelled:
                raise _Reconnect("consumer cancelled by the broker")
            if not channel.is_open:
                raise _Reconnect("channel closed by the broker")

    def _on_cancel(self) -> None:
        self._cancelled = True
