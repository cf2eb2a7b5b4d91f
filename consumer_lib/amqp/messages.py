"""What goes on the wire: the two exchanges, and the properties of each kind of message.

    tokens exchange    durable fanout; `TokenUpdate` bodies (signed or plain), type
                       `MESSAGE_TYPE`, expiring from queues with the token
    requests exchange  `{exchange}.requests`, durable fanout; `RefreshRequest` bodies, type
                       `REQUEST_MESSAGE_TYPE`, expiring after `REQUEST_TTL_MS`; and sealed
                       `ControlRequest` envelopes, type `CONTROL_MESSAGE_TYPE`, alike

Every message carries `user_id`, the user its connection logged in as (RabbitMQ refuses any
other, so a receiver can trust it), `app_id` (the sender's name) and a timestamp. These
functions work on a raw pika channel and raise pika's errors: `Channel` (connection.py)
calls them inside `translated()`; nothing else should.
"""

from __future__ import annotations

import math
from typing import Any

import pika

from ..wire.control import CONTROL_MESSAGE_TYPE
from ..wire.refresh_request import (
    REQUEST_MESSAGE_TYPE,
    REQUEST_TTL_MS,
    RefreshRequest,
    requests_exchange,
)
from ..wire.signing import PLAIN, UpdateCodec
from ..wire.update import TokenUpdate
from .params import amqp_user_id

#: The fanout exchange carries `TokenUpdate` JSON; `type` names the contract.
MESSAGE_TYPE = "wxtoken.update.v1"


#: The AMQP header with the producer's wall clock at publish, in integer milliseconds.
SENT_MS_HEADER = "x-wxtoken-sent-ms"


def parse_sent_ms(raw: object) -> float | None:
    """The header's value in seconds: None when absent, NaN when garbage (not an integer
    of ms in 1..2^53); `ClockOffset.sample` ignores both and counts the NaN."""
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int | bytes | str):
        return math.nan
    try:
        value = int(raw)
    except ValueError:
        return math.nan
    if not 0 < value < 2**53:
        return math.nan
    return value / 1000.0


def sent_s(headers: object) -> float | None:
    """The publisher's send time in a message's headers (`SENT_MS_HEADER`), in seconds;
    None when there is none or it is garbage."""
    if not isinstance(headers, dict):
        return None
    return parse_sent_ms(headers.get(SENT_MS_HEADER))


def declare_exchange(channel: Any, exchange: str) -> None:
    """The durable fanout exchange; publishing to a missing one would close the channel."""
    channel.exchange_declare(exchange=exchange, exchange_type="fanout", durable=True)


def declare_requests_exchange(channel: Any, exchange: str) -> None:
    """Declare the durable fanout requests exchange of the token exchange `exchange`."""
    channel.exchange_declare(
        exchange=requests_exchange(exchange), exchange_type="fanout", durable=True
    )


def update_properties(
    update: TokenUpdate, *, now_s: float, sender: str, user_id: str | None
) -> pika.BasicProperties:
    """Properties of a token update: transient, expiring from queues with the token, and
    the send time `now_s` in ms (`SENT_MS_HEADER`, outside the signed body, which stays the
    same bytes in every re-publish) for the subscribers' clock offset estimate."""
    ttl_ms = max(1, int((update.expires_at - now_s) * 1000))
    return pika.BasicProperties(
        headers={SENT_MS_HEADER: round(now_s * 1000)},
        content_type="application/json",
        delivery_mode=pika.DeliveryMode.Transient,
        expiration=str(ttl_ms),
        message_id=f"{update.app_id}:{update.kind}:{update.version}",
        type=MESSAGE_TYPE,
        app_id=sender,
        timestamp=int(now_s),
        user_id=user_id,
    )


def request_properties(
    *, sender: str, now_s: float, user_id: str | None = None, message_type: str | None = None
) -> pika.BasicProperties:
    """Message properties of a request: transient, expiring after `REQUEST_TTL_MS`, and
    `user_id` (see `amqp_user_id`) when given."""
    return pika.BasicProperties(
        content_type="application/json",
        delivery_mode=pika.DeliveryMode.Transient,
        expiration=str(REQUEST_TTL_MS),
        type=message_type or REQUEST_MESSAGE_TYPE,
        app_id=sender[:128],
        timestamp=int(now_s),
        user_id=user_id,
    )


def publish_update(
    channel: Any,
    exchange: str,
    update: TokenUpdate,
    *,
    now_s: float,
    sender: str,
    codec: UpdateCodec = PLAIN,
) -> None:
    """Publish one update; on a confirming channel, raises pika's errors on a nack or loss.

    The message expires from queues with the token, so a subscriber that was away for a
    while is not handed a pile of dead tokens.
    """
    channel.basic_publish(
        exchange=exchange,
        routing_key="",
        body=codec.encode(update),
        properties=update_properties(
            update, now_s=now_s, sender=sender, user_id=amqp_user_id(channel)
        ),
    )


def publish_request(
    channel: Any, exchange: str, request: RefreshRequest, *, sender: str, now_s: float
) -> None:
    """Publish `request` on the requests exchange of `exchange`; raises pika's errors.

    Carries the connection's user as `user_id` (see `amqp_user_id`). Not mandatory: with
    no producer online the request is dropped, which is not an error.
    """
    channel.basic_publish(
        exchange=requests_exchange(exchange),
        routing_key="",
        body=request.encode(),
        properties=request_properties(sender=sender, now_s=now_s, user_id=amqp_user_id(channel)),
        mandatory=False,
    )


def publish_control(channel: Any, exchange: str, body: bytes, *, sender: str, now_s: float) -> None:
    """Publish a sealed control request on the requests exchange of `exchange`, with a
    request's properties typed `CONTROL_MESSAGE_TYPE`; raises pika's errors. Not mandatory:
    with no producer online it is dropped."""
    channel.basic_publish(
        exchange=requests_exchange(exchange),
        routing_key="",
        body=body,
        properties=request_properties(
            sender=sender,
            now_s=now_s,
            user_id=amqp_user_id(channel),
            message_type=CONTROL_MESSAGE_TYPE,
        ),
        mandatory=False,
    )
