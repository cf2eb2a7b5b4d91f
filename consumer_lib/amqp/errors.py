"""The one place pika's exceptions become ours.

Everything pika raises when a connection or channel is lost, refused or closed is in
`AMQP_ERRORS`; `translated(what)` turns any of them into a `BrokerError` (a 404 on a
passive declare into `ExchangeMissing`, a nack into `PublishRefused`) whose message says
what we were doing. pika's messages carry no credentials; URLs are never part of them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pika.exceptions

from ..errors import BrokerError, ExchangeMissing, PublishRefused

#: Everything pika raises when a connection or channel is lost or refused.
AMQP_ERRORS: tuple[type[Exception], ...] = (pika.exceptions.AMQPError, OSError)

_NOT_FOUND = 404


def describe_amqp_error(exc: BaseException) -> str:
    """A short description of a pika failure (pika's messages carry no secrets)."""
    name = exc.__class__.__name__
    text = str(exc) or name
    if not text.startswith(name):
        text = f"{name}: {text}"
    return text.splitlines()[0][:200]


@contextmanager
def translated(what: str) -> Iterator[None]:
    """Run the body; any pika failure leaves it as a `BrokerError` saying `what` failed."""
    try:
        yield
    except (pika.exceptions.NackError, pika.exceptions.UnroutableError) as exc:
        raise PublishRefused(f"{what}: {describe_amqp_error(exc)}") from None
    except pika.exceptions.ChannelClosedByBroker as exc:
        kind = ExchangeMissing if exc.reply_code == _NOT_FOUND else BrokerError
        raise kind(f"{what}: {describe_amqp_error(exc)}") from None
    except AMQP_ERRORS as exc:
        raise BrokerError(f"{what}: {describe_amqp_error(exc)}") from None
