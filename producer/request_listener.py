"""Receiving refresh requests: a daemon thread consuming the requests exchange.

A `ConsumerThread` (one pika connection, auto-ack, reconnect with capped, jittered backoff)
that on every (re)connect declares the requests exchange (the producer may create it) and
binds its own server-named queue to it. Each body is decoded with `RefreshRequest.decode`;
an invalid one is counted and logged in one line, a valid one is handed to `on_request`,
whose exceptions are logged and never stop the thread.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass

import pika
from pika.adapters.blocking_connection import BlockingChannel
from pika.spec import BasicProperties

from consumer_lib.amqp.consumer import ConsumerThread
from consumer_lib.amqp.params import connection_parameters
from consumer_lib.errors import InvalidUpdate
from consumer_lib.settings import TlsFiles
from consumer_lib.wire.refresh_request import (
    RefreshRequest,
    declare_requests_exchange,
    requests_exchange,
)

log = logging.getLogger(__name__)


@dataclass
class RequestListenerStats:
    """Messages received, those that were not valid requests, and handler failures."""

    received: int = 0
    rejected: int = 0
    handler_errors: int = 0


class RequestListener(ConsumerThread):
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
        self.stats = RequestListenerStats()

    @property
    def exchange(self) -> str:
        """The name of the exchange consumed (the requests exchange)."""
        return requests_exchange(self._exchange)

    # ------------------------------------------------------------ ConsumerThread hooks
    def _declare(self, channel: BlockingChannel) -> str:
        declare_requests_exchange(channel, self._exchange)
        return self.exchange

    def _on_subscribed(self, connection: pika.BlockingConnection) -> None:
        del connection
        log.info("listening for refresh requests on %s", self.exchange)

    def _handle(self, body: bytes, properties: BasicProperties) -> None:
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
