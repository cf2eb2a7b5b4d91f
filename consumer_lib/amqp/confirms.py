"""Publisher confirms without a round trip per message.

pika's `BlockingChannel.confirm_delivery()` makes every `basic_publish` wait for its own
ack: one broker round trip per message, a few hundred messages a second at best. A
takeover re-publishes every app at once, so the publisher needs many in flight.
`PipelinedChannel` turns confirms on through the channel's underlying (asynchronous) pika
channel, numbers publishes as the broker does (delivery tags 1, 2, ...), and reports each
ack or nack to `on_confirm(item, acked)` while the connection's events are processed, in
the connection's thread. Nothing here blocks on a single message.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import pika.spec

from ..errors import BrokerError
from ..wire.signing import PLAIN, UpdateCodec
from ..wire.update import TokenUpdate
from .connection import Channel
from .errors import translated
from .messages import update_properties

Item = TypeVar("Item")

#: How long the broker may take to turn confirms on.
SELECT_TIMEOUT_S = 10.0


def _nothing() -> None:
    """Scheduled only to make a waiting `process_events` return."""


class PipelinedChannel(Generic[Item]):
    """A confirming channel with any number of publishes in flight."""

    def __init__(self, channel: Channel, on_confirm: Callable[[Item, bool], None]) -> None:
        self._channel = channel
        self._impl: Any = channel.raw._impl
        self._on_confirm = on_confirm
        self._in_flight: OrderedDict[int, Item] = OrderedDict()
        self._next_tag = 1
        self._user_id = channel.user_id
        selected: list[bool] = []

        def select_ok(_frame: object) -> None:
            selected.append(True)
            channel.connection.call_soon(_nothing)

        with translated("turning on publisher confirms"):
            self._impl.confirm_delivery(ack_nack_callback=self._confirmed, callback=select_ok)
        deadline_m = time.monotonic() + SELECT_TIMEOUT_S
        while not selected:
            if time.monotonic() > deadline_m:
                raise BrokerError("the broker did not turn publisher confirms on")
            channel.connection.process_events(0.2)

    @property
    def in_flight(self) -> int:
        """Publishes the broker has not confirmed yet."""
        return len(self._in_flight)

    @property
    def is_open(self) -> bool:
        return self._channel.is_open

    def take_in_flight(self) -> list[Item]:
        """Forget every unconfirmed publish and return their items (after a loss)."""
        items = list(self._in_flight.values())
        self._in_flight.clear()
        return items

    def publish_update(
        self,
        item: Item,
        exchange: str,
        update: TokenUpdate,
        *,
        now_s: float,
        sender: str,
        codec: UpdateCodec = PLAIN,
    ) -> None:
        """Send `update` without waiting; its confirm comes later, with `item`."""
        properties = update_properties(update, now_s=now_s, sender=sender, user_id=self._user_id)
        body = codec.encode(update)
        with translated(f"publishing to {exchange}"):
            self._impl.basic_publish(exchange, "", body, properties, False)
        self._in_flight[self._next_tag] = item
        self._next_tag += 1

    def _confirmed(self, frame: Any) -> None:
        """pika's ack/nack callback, in the connection's thread."""
        method = frame.method
        acked = isinstance(method, pika.spec.Basic.Ack)
        tag = int(method.delivery_tag)
        if method.multiple:
            while self._in_flight:
                first = next(iter(self._in_flight))
                if first > tag:
                    break
                self._on_confirm(self._in_flight.pop(first), acked)
        elif tag in self._in_flight:
            self._on_confirm(self._in_flight.pop(tag), acked)
        self._channel.connection.call_soon(_nothing)
