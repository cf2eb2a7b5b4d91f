"""Receiving refresh requests: a daemon thread consuming the requests exchange.

A `ConsumerThread` (one pika connection, auto-ack, reconnect with capped, jittered backoff)
that on every (re)connect declares the requests exchange (the producer may create it) and
binds its own server-named queue to it. Each body is decoded with `RefreshRequest.decode`;
an invalid one is counted (`stats.rejected`) and logged at most once a minute with the
count since (`SummedWarning`), a valid one is handed to `on_request`, whose exceptions are
logged and never stop the thread. A message typed `CONTROL_MESSAGE_TYPE` (an operator's
signed control request) is first charged to its sender's allowance (with `limits`: per
login, as `control`; over it, dropped and counted in `stats.control_dropped` before any
signature is checked), then goes to `on_control` as the undecoded `Delivery`
(`producer.messaging.control.ControlHandler.handle`); without one it is rejected.
With `screen`, a valid request that is worth nothing (about an app or kind not served
here, or a fingerprint that is neither the current token's nor a recent one's) is dropped
and counted in `stats.ignored` before anything is charged; then, with `limits`
(`RequesterLimits`), a request over its sender's allowance for that credential (by the
broker-checked `user_id`, app and kind) is dropped and counted in `stats.dropped`. Each
request is logged at DEBUG only: a flood must not flood the log (drops are logged once a
minute).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from consumer_lib.amqp import Channel, Connection, ConsumerThread, Delivery, connection_parameters
from consumer_lib.errors import InvalidUpdate
from consumer_lib.settings import TlsFiles
from consumer_lib.wire.control import CONTROL_MESSAGE_TYPE
from consumer_lib.wire.refresh_request import RefreshRequest, requests_exchange
from producer.limits.requesters import RequesterLimits
from producer.observability.summed_log import SummedWarning

if TYPE_CHECKING:
    from producer.settings import ProducerSettings

log = logging.getLogger(__name__)


@dataclass
class RequestListenerStats:
    """Messages received, those that were not valid requests, and handler failures."""

    received: int = 0
    rejected: int = 0
    handler_errors: int = 0
    #: Valid requests dropped: their sender was over its allowance (`RequesterLimits`).
    dropped: int = 0
    #: Valid requests dropped before any charge: about nothing served or held (`screen`).
    ignored: int = 0
    #: Control messages dropped unverified: their sender was over its allowance.
    control_dropped: int = 0


class RequestListener(ConsumerThread):
    """Consumes the requests exchange of `exchange` in a daemon thread."""

    @classmethod
    def from_settings(
        cls,
        settings: ProducerSettings,
        *,
        on_request: Callable[[RefreshRequest], None],
        on_control: Callable[[Delivery], None] | None,
        screen: Callable[[RefreshRequest], bool] | None = None,
    ) -> RequestListener:
        """The producer's listener: its broker, exchange and per-requester allowance."""
        return cls(
            settings.amqp_url,
            settings.exchange,
            tls=settings.amqp_tls,
            on_request=on_request,
            on_control=on_control,
            screen=screen,
            limits=RequesterLimits(
                rate_per_s=settings.request_rate_per_requester_per_s,
                burst=settings.request_burst_per_requester,
            ),
            connection_name=f"wxtoken-producer/{settings.producer_id}/requests",
            heartbeat_s=settings.heartbeat_s,
            reconnect_max_s=settings.reconnect_max_s,
        )

    def __init__(  # noqa: PLR0913 - keyword-only: broker settings, handlers, limits
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
        on_control: Callable[[Delivery], None] | None = None,
        limits: RequesterLimits | None = None,
        screen: Callable[[RefreshRequest], bool] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(
            connection_parameters(
                amqp_url, connection_name=connection_name, heartbeat_s=heartbeat_s, tls=tls
            ),
            thread_name="wxtoken-request-listener",
            logger=log,
            outage_name="broker (refresh requests)",
            reconnect_max_s=reconnect_max_s,
            rand=rand,
        )
        self._exchange = exchange
        self._on_request = on_request
        self._on_control = on_control
        self._limits = limits
        self._screen = screen
        self._rejections = SummedWarning(log, clock=clock)
        self.stats = RequestListenerStats()

    @property
    def exchange(self) -> str:
        """The name of the exchange consumed (the requests exchange)."""
        return requests_exchange(self._exchange)

    # ------------------------------------------------------------ ConsumerThread hooks
    def _declare(self, channel: Channel) -> str:
        channel.declare_requests_exchange(self._exchange)
        return self.exchange

    def _on_subscribed(self, connection: Connection) -> None:
        del connection
        log.info("listening for refresh requests on %s", self.exchange)

    def _handle(self, delivery: Delivery) -> None:
        self.stats.received += 1
        if delivery.type == CONTROL_MESSAGE_TYPE and self._on_control is not None:
            # Charged before the signature is checked: a forged flood costs no verifying.
            if self._limits is not None and not self._limits.admit(
                delivery.user_id, "control", about="control"
            ):
                self.stats.control_dropped += 1
                return
            self._on_control(delivery)  # verifies, counts and logs; never raises
            return
        try:
            request = RefreshRequest.decode(delivery.body)
        except InvalidUpdate as exc:
            self.stats.rejected += 1
            sender = str(delivery.app_id or "unknown sender")[:64]
            self._rejections.note(
                "rejected a message from %r (user %r): %s",
                sender,
                str(delivery.user_id)[:64],
                exc,
            )
            return
        if self._screen is not None and not self._screen(request):
            self.stats.ignored += 1  # costs nothing: charged to no allowance
            log.debug("ignoring refresh request %s: not served or not held here", request)
            return
        if self._limits is not None and not self._limits.admit(
            delivery.user_id, request.requester, about=f"{request.app_id}/{request.kind}"
        ):
            self.stats.dropped += 1
            return
        log.debug("refresh request %s (user_id %r)", request, delivery.user_id)
        try:
            self._on_request(request)
        except Exception:
            self.stats.handler_errors += 1
            log.exception("handling refresh request %s failed", request)
