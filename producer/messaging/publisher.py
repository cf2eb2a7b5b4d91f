"""Publishing token updates on the fanout exchange, with publisher confirms.

`Publisher` owns one broker connection in its own thread (pika is not thread-safe):
`publish()` may be called from any thread; it records the update (the newest per app and
kind wins) and wakes the thread through the connection's one thread-safe call. The thread
publishes without waiting for each confirm (`PipelinedChannel`): thousands of updates go
out in one burst, their acks arrive as they come.

Failures:
- The broker away, or the channel closed: every unconfirmed update waits with the pending
  ones and goes out on the next connection; reconnects back off (capped, jittered).
- A nack (a bound queue refused the message, e.g. a consumer's own `x-max-length=1,
  x-overflow=reject-publish` queue; the other queues did receive it): the update is tried
  again after a capped, jittered backoff, at most `NACK_RETRIES` times, then left to the
  next scheduled re-publish. One full queue can never make the producer re-deliver to
  every other subscriber in a tight loop.
- Any other exception in the thread is logged with its traceback and the loop restarts
  after a backoff. `healthy` says whether the loop is still turning (for a health check).
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from consumer_lib.amqp import Connection, PipelinedChannel, connection_parameters
from consumer_lib.amqp.consumer import LOGIN_RETRY_S
from consumer_lib.amqp.errors import in_words
from consumer_lib.backoff import Backoff
from consumer_lib.errors import BrokerError, BrokerLoginRefused
from consumer_lib.outage import OutageLog
from consumer_lib.settings import TlsFiles
from consumer_lib.wire.signing import PLAIN, UpdateCodec
from consumer_lib.wire.update import TokenKind, TokenUpdate

log = logging.getLogger(__name__)

#: A nacked update is tried again at most this many times, then left to the next re-publish.
NACK_RETRIES = 3
#: The first retry after a nack waits about this long; doubling, capped at reconnect_max_s.
NACK_RETRY_BASE_S = 1.0
#: At most this many publishes wait for their confirm at once.
MAX_IN_FLIGHT = 5000
#: How long one round of the loop may wait for something to do.
ROUND_S = 0.5

_Key = tuple[str, TokenKind]


def _nothing() -> None:
    """Scheduled only to wake the publisher thread."""


@dataclass
class PublisherStats:
    """What the publisher did: confirmed publishes, nacks, and what it gave up on."""

    published: int = 0
    nacked: int = 0
    given_up: int = 0
    expired: int = 0
    loop_errors: int = 0


class Publisher:
    """A background thread that keeps one confirming channel and publishes what it is given."""

    def __init__(  # noqa: PLR0913 - keyword-only: broker settings with defaults, and test seams
        self,
        amqp_url: str,
        exchange: str,
        *,
        sender: str,
        heartbeat_s: int = 30,
        reconnect_max_s: float = 5.0,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
        codec: UpdateCodec = PLAIN,
        tls: TlsFiles | None = None,
        stalled_after_s: float = 30.0,
    ) -> None:
        self._codec = codec
        self._params = connection_parameters(
            amqp_url, connection_name=sender, heartbeat_s=heartbeat_s, tls=tls
        )
        self._exchange = exchange
        self._sender = sender
        self._clock = clock
        self._monotonic = monotonic
        self._rand = rand
        self._reconnect_max_s = reconnect_max_s
        self._stalled_after_s = stalled_after_s
        self._backoff = Backoff(0.2, reconnect_max_s, rand=rand)
        self._lock = threading.Lock()
        self._pending: dict[_Key, TokenUpdate] = {}  # under _lock
        #: A wake of the thread is on its way and it has not taken the pending ones since:
        #: publish() need not wake it again (500 publishes a second woke it 500 times).
        self._woken = False  # under _lock
        self._live: Connection | None = None  # under _lock
        # Touched only by the publisher thread:
        self._retry: dict[_Key, tuple[float, TokenUpdate]] = {}  # due (monotonic), update
        self._nacks: dict[_Key, tuple[int, int]] = {}  # version, nacks so far
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._thread = threading.Thread(target=self._run, name="wxtoken-publisher", daemon=True)
        self._outage = OutageLog(log, "broker")
        #: Why the broker refuses our login (a configuration error), None once it accepts.
        self.login_refused: str | None = None
        self.last_loop_monotonic = monotonic()
        self.stats = PublisherStats()

    # ------------------------------------------------------------ public
    @property
    def connected(self) -> bool:
        """True while a confirming channel to the broker is open."""
        return self._connected.is_set()

    @property
    def healthy(self) -> bool:
        """True while the thread runs and its loop turned in the last `stalled_after_s`
        (connected or not: see `connected`). A health check reports False as unhealthy."""
        age_s = self._monotonic() - self.last_loop_monotonic
        return self._thread.is_alive() and age_s < self._stalled_after_s

    @property
    def published_count(self) -> int:
        """Publishes the broker confirmed."""
        return self.stats.published

    @property
    def nacked_count(self) -> int:
        """Confirms the broker refused (each nack counted, retried or given up)."""
        return self.stats.nacked

    def start(self) -> Publisher:
        self._thread.start()
        return self

    def publish(self, update: TokenUpdate) -> None:
        """Queue `update` for publishing; a newer pending one for the same app wins."""
        self._put(update)
        with self._lock:
            woken, self._woken = self._woken, True
        if not woken:
            self._wake()

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the thread (pending updates not yet published are dropped). Idempotent."""
        self._stop.set()
        self._wake()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout_s)

    # ------------------------------------------------------------ the thread
    def _wake(self) -> None:
        """End the thread's current wait at once (pika's one thread-safe call)."""
        with self._lock:
            live = self._live
        if live is not None:
            # Closed just now: the next connection takes the update anyway.
            with contextlib.suppress(BrokerError):
                live.call_threadsafe(_nothing)

    def _put(self, update: TokenUpdate) -> None:
        key = (update.app_id, update.kind)
        with self._lock:
            pending = self._pending.get(key)
            if pending is None or pending.version <= update.version:
                self._pending[key] = update

    def _run(self) -> None:
        while not self._stop.is_set():
            self.last_loop_monotonic = self._monotonic()
            connection: Connection | None = None
            pipe: PipelinedChannel[TokenUpdate] | None = None
            try:
                connection = Connection.open(self._params, what="connecting to the broker")
                channel = connection.channel()
                channel.declare_exchange(self._exchange)
                pipe = PipelinedChannel(channel, self._confirmed)
                with self._lock:
                    self._live = connection
                self._connected.set()
                self.login_refused = None
                self._backoff.reset()
                self._outage.succeeded()
                log.info("publisher connected to the broker")
                self._pump(connection, pipe)
            except BrokerLoginRefused as exc:
                self.login_refused = str(exc)
                delay_s = max(LOGIN_RETRY_S, self._backoff.next_delay_s())
                self._outage.refused(self.login_refused, delay_s)
                self._stop.wait(delay_s)
            except BrokerError as exc:
                delay_s = self._backoff.next_delay_s()
                self._outage.failed(in_words(exc), delay_s, detail=str(exc))
                self._stop.wait(delay_s)
            except Exception:
                self.stats.loop_errors += 1
                delay_s = self._backoff.next_delay_s()
                log.exception("unexpected error in the publisher; restarting in %.1f s", delay_s)
                self._stop.wait(delay_s)
            finally:
                with self._lock:
                    self._live = None
                self._connected.clear()
                if pipe is not None:
                    for update in pipe.take_in_flight():
                        self._put(update)  # unconfirmed: goes out on the next connection
                if connection is not None:
                    connection.close()

    def _pump(self, connection: Connection, pipe: PipelinedChannel[TokenUpdate]) -> None:
        while not self._stop.is_set():
            now_m = self._monotonic()
            self.last_loop_monotonic = now_m
            self._release_due_retries(now_m)
            room = MAX_IN_FLIGHT - pipe.in_flight
            more_waiting = False
            if room > 0:
                batch, more_waiting = self._take_pending(room)
                for update in batch:
                    self._send(pipe, update)
            # Flushes what was sent, then waits until an ack, a publish() or the round ends.
            connection.process_events(0 if more_waiting else self._wait_s(now_m))
            if not pipe.is_open:
                raise BrokerError("publishing channel closed by the broker")

    def _send(self, pipe: PipelinedChannel[TokenUpdate], update: TokenUpdate) -> None:
        now_s = self._clock()
        if not update.is_valid_at(now_s):
            self.stats.expired += 1
            log.info("not publishing %s: expired while waiting", update)
            return
        try:
            pipe.publish_update(
                update, self._exchange, update, now_s=now_s, sender=self._sender, codec=self._codec
            )
        except BaseException:
            self._put(update)  # keep it for the next connection
            raise

    def _wait_s(self, now_m: float) -> float:
        if not self._retry:
            return ROUND_S
        next_due_m = min(due_m for due_m, _ in self._retry.values())
        return max(0.0, min(ROUND_S, next_due_m - now_m))

    def _take_pending(self, limit: int) -> tuple[list[TokenUpdate], bool]:
        """Up to `limit` pending updates, and whether more are waiting."""
        with self._lock:
            self._woken = False  # a publish() from now on wakes the thread again
            if len(self._pending) <= limit:
                updates = list(self._pending.values())
                self._pending.clear()
                return updates, False
            keys = list(self._pending)[:limit]
            return [self._pending.pop(key) for key in keys], True

    def _release_due_retries(self, now_m: float) -> None:
        for key, (due_m, update) in list(self._retry.items()):
            if due_m <= now_m:
                del self._retry[key]
                self._put(update)  # unless a newer one is pending already

    # ------------------------------------------------------------ confirms
    def _confirmed(self, update: TokenUpdate, acked: bool) -> None:
        """An ack or nack from the broker, in the publisher thread."""
        key = (update.app_id, update.kind)
        if acked:
            self.stats.published += 1
            if self._nacks.get(key, (0, 0))[0] <= update.version:
                self._nacks.pop(key, None)
            # The broker confirms once every bound queue took the message: on a busy host
            # that is well after the subscribers began receiving it.
            log.info("published %s (confirmed)", update)
            return
        self.stats.nacked += 1
        version, nacks = self._nacks.get(key, (update.version, 0))
        if version > update.version:
            return  # a newer version is on its way; this one does not matter any more
        nacks = nacks + 1 if version == update.version else 1
        if nacks > NACK_RETRIES:
            self._nacks.pop(key, None)
            self.stats.given_up += 1
            log.warning(
                "broker refused %s %d times (a bound queue is full or refuses it; the other "
                "queues received it); leaving it to the next re-publish",
                update,
                nacks,
            )
            return
        self._nacks[key] = (update.version, nacks)
        ceiling_s = min(self._reconnect_max_s, NACK_RETRY_BASE_S * 2.0 ** (nacks - 1))
        delay_s = ceiling_s / 2 + self._rand() * ceiling_s / 2
        self._retry[key] = (self._monotonic() + delay_s, update)
        log.warning(
            "broker refused %s (a bound queue is full or refuses it); retry %d of %d in %.1f s",
            update,
            nacks,
            NACK_RETRIES,
            delay_s,
        )
