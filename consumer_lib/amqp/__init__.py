"""RabbitMQ, shared by the producer, the ops CLI and subscribers; the only package that
imports pika (a test checks it), and none of pika's exceptions leaves it.

    errors      AMQP_ERRORS, translated(): every pika failure becomes a `BrokerError`
    params      connection parameters (one per broker URL, TLS verified), amqp_user_id()
    messages    the two exchanges and the properties of updates and refresh requests
    connection  Connection and Channel: pika's blocking connection in our terms
    confirms    PipelinedChannel: publisher confirms with many publishes in flight
    consumer    ConsumerThread: one connection's thread consuming one exchange, reconnecting

pika is not thread-safe: each connection belongs to one thread.
"""

from .confirms import PipelinedChannel
from .connection import Channel, Connection, Delivery
from .consumer import ConsumerThread
from .errors import AMQP_ERRORS, describe_amqp_error, translated
from .messages import (
    MESSAGE_TYPE,
    declare_exchange,
    declare_requests_exchange,
    publish_control,
    publish_request,
    publish_update,
    request_properties,
    update_properties,
)
from .params import amqp_user_id, close_quietly, connection_parameters

__all__ = [
    "AMQP_ERRORS",
    "MESSAGE_TYPE",
    "Channel",
    "Connection",
    "ConsumerThread",
    "Delivery",
    "PipelinedChannel",
    "amqp_user_id",
    "close_quietly",
    "connection_parameters",
    "declare_exchange",
    "declare_requests_exchange",
    "describe_amqp_error",
    "publish_control",
    "publish_request",
    "publish_update",
    "request_properties",
    "translated",
    "update_properties",
]
