"""`Connection` and `Channel`: pika's blocking connection in our terms.

Every method translates pika's failures into `BrokerError` (see errors.py), so the
publisher, the request listener, the subscriber and the ops CLI never see a pika
exception. A connection belongs to the thread that opened it; `call_threadsafe` is the one
method another thread may call (it is pika's `add_callback_threadsafe`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pika
from pika.adapters.blocking_connection import BlockingChannel

from ..wire.refresh_request import RefreshRequest
from ..wire.signing import PLAIN, UpdateCodec
from ..wire.update import TokenUpdate
from . import messages
from .errors import login_refused, translated
from .params import amqp_user_id, close_quietly


@dataclass(frozen=True)
class Delivery:
    """One message received: its body and the properties we read."""

    body: bytes
    #: The publisher's login, checked by the broker (None when the publisher set none).
    user_id: str | None
    #: The publisher's own name for itself (not checked by anyone).
    app_id: str | None
    type: str | None
    #: The producer's send time (its clock, s) from the `SENT_MS_HEADER` header; None when
    #: absent or not a number (unsigned: only the producer may publish to the exchange).
    sent_s: float | None = None


OnDelivery = Callable[[Delivery], None]


class Connection:
    """One broker connection; `open()` it, take channels, pump `process_events()`."""

    def __init__(self, raw: pika.BlockingConnection) -> None:
        self._raw = raw

    @classmethod
    def open(cls, params: Sequence[pika.ConnectionParameters], *, what: str) -> Connection:
        """Connect to the first broker of `params` that answers; `BrokerError` if none,
        `BrokerLoginRefused` when the broker refused the login or the vhost."""
        first = params[0] if params else None
        credentials = getattr(first, "credentials", None)
        user = credentials.username if isinstance(credentials, pika.PlainCredentials) else None
        vhost = getattr(first, "virtual_host", None)
        with translated(what), login_refused(user, vhost):
            return cls(pika.BlockingConnection(list(params)))

    @property
    def is_open(self) -> bool:
        return bool(self._raw.is_open)

    @property
    def raw(self) -> pika.BlockingConnection:
        """pika's connection, for the modules of this package only."""
        return self._raw

    def channel(self) -> Channel:
        with translated("opening a channel"):
            return Channel(self._raw.channel(), self)

    def process_events(self, time_limit_s: float | None) -> None:
        """Handle I/O, heartbeats and callbacks for up to `time_limit_s` (returns early
        when a message was dispatched or a callback ran; None: no limit but that)."""
        with translated("talking to the broker"):
            self._raw.process_data_events(time_limit=time_limit_s)

    def call_soon(self, callback: Callable[[], None]) -> None:
        """Run `callback` in this connection's thread at the next `process_events`; from
        that thread only (it also makes a waiting `process_events` return)."""
        self._raw.call_later(0, callback)

    def call_later(self, delay_s: float, callback: Callable[[], None]) -> None:
        """Run `callback` in this connection's thread after `delay_s`, from a
        `process_events` call (which then returns); from that thread only."""
        self._raw.call_later(delay_s, callback)

    def call_threadsafe(self, callback: Callable[[], None]) -> None:
        """From any thread: run `callback` in the connection's thread; `BrokerError` if the
        connection is closed."""
        with translated("handing work to the broker thread"):
            self._raw.add_callback_threadsafe(callback)

    def close(self) -> None:
        """Close if open; a broker already gone is not an error here. Idempotent."""
        close_quietly(self._raw)


class Channel:
    """One channel; raw pika errors never leave its methods."""

    def __init__(self, raw: BlockingChannel, connection: Connection) -> None:
        self._raw = raw
        self.connection = connection

    @property
    def raw(self) -> BlockingChannel:
        """pika's channel, for the modules of this package only."""
        return self._raw

    @property
    def is_open(self) -> bool:
        return bool(self._raw.is_open)

    @property
    def user_id(self) -> str | None:
        """The user the connection logged in as (see `amqp_user_id`)."""
        return amqp_user_id(self._raw)

    def confirm(self) -> None:
        """Publisher confirms, one blocking wait per publish (see `confirms.py` for more)."""
        with translated("turning on publisher confirms"):
            self._raw.confirm_delivery()

    def declare_exchange(self, exchange: str) -> None:
        """The durable fanout token exchange."""
        with translated(f"declaring {exchange}"):
            messages.declare_exchange(self._raw, exchange)

    def declare_requests_exchange(self, exchange: str) -> None:
        """The requests exchange next to the token exchange `exchange`."""
        with translated(f"declaring the requests exchange of {exchange}"):
            messages.declare_requests_exchange(self._raw, exchange)

    def check_exchange(self, exchange: str) -> None:
        """A passive declare: `ExchangeMissing` when there is no such exchange."""
        with translated(f"exchange {exchange!r}"):
            self._raw.exchange_declare(exchange=exchange, passive=True)

    def subscribe(
        self, exchange: str, on_delivery: OnDelivery, *, on_cancel: Callable[[], None]
    ) -> str:
        """Bind a server-named exclusive queue to `exchange` and consume it with auto-ack;
        returns the queue's name. `on_cancel` runs when the broker cancels the consumer."""

        def deliver(_channel: Any, _method: Any, properties: Any, body: bytes) -> None:
            on_delivery(
                Delivery(
                    body,
                    properties.user_id,
                    properties.app_id,
                    properties.type,
                    messages.sent_s(properties.headers),
                )
            )

        with translated(f"subscribing to {exchange}"):
            declared = self._raw.queue_declare(queue="", exclusive=True, auto_delete=True)
            queue: str = declared.method.queue
            self._raw.queue_bind(queue=queue, exchange=exchange)
            self._raw.add_on_cancel_callback(lambda _frame: on_cancel())
            self._raw.basic_consume(queue=queue, on_message_callback=deliver, auto_ack=True)
        return queue

    def publish_update(
        self,
        exchange: str,
        update: TokenUpdate,
        *,
        now_s: float,
        sender: str,
        codec: UpdateCodec = PLAIN,
    ) -> None:
        """One update; on a confirming channel waits for the broker (`PublishRefused`)."""
        with translated(f"publishing to {exchange}"):
            messages.publish_update(
                self._raw, exchange, update, now_s=now_s, sender=sender, codec=codec
            )

    def publish_request(
        self, exchange: str, request: RefreshRequest, *, sender: str, now_s: float
    ) -> None:
        """One refresh request on the requests exchange of `exchange`."""
        with translated("requesting a refresh"):
            messages.publish_request(self._raw, exchange, request, sender=sender, now_s=now_s)

    def publish_control(self, exchange: str, body: bytes, *, sender: str, now_s: float) -> None:
        """One sealed control request on the requests exchange of `exchange`."""
        with translated("sending the control request"):
            messages.publish_control(self._raw, exchange, body, sender=sender, now_s=now_s)

    def publish_small(
        self, exchange: str, body: bytes, *, message_type: str, sender: str, now_s: float
    ) -> None:
        """A transient, non-mandatory message expiring like a request (see messages.py)."""
        properties = messages.request_properties(
            sender=sender, now_s=now_s, user_id=self.user_id, message_type=message_type
        )
        with translated(f"publishing to {exchange}"):
            self._raw.basic_publish(
                exchange=exchange,
                routing_key="",
                body=body,
                properties=properties,
                mandatory=False,
            )
