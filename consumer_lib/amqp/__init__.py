"""RabbitMQ, shared by the producer, the ops CLI and subscribers.

    params    connection parameters (one per broker URL, TLS verified), AMQP_ERRORS,
              describe_amqp_error(), close_quietly(), amqp_user_id()
    consumer  ConsumerThread: one connection's thread consuming one exchange, reconnecting
    outage    OutageLog: an outage logged once, reminded now and then, and its end

pika is not thread-safe: each connection belongs to one thread.
"""

from .consumer import ConsumerThread
from .outage import OutageLog
from .params import (
    AMQP_ERRORS,
    MESSAGE_TYPE,
    amqp_user_id,
    close_quietly,
    connection_parameters,
    describe_amqp_error,
)

__all__ = [
    "AMQP_ERRORS",
    "MESSAGE_TYPE",
    "ConsumerThread",
    "OutageLog",
    "amqp_user_id",
    "close_quietly",
    "connection_parameters",
    "describe_amqp_error",
]
