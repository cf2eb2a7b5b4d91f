"""The one place pika's exceptions become ours.

Everything pika raises when a connection or channel is lost, refused or closed is in
`AMQP_ERRORS`; `translated(what)` turns any of them into a `BrokerError` (a 404 on a
passive declare into `ExchangeMissing`, a nack into `PublishRefused`) whose message says
what we were doing. pika's messages carry no credentials; URLs are never part of them.

Each `BrokerError` made here also says what happened in words (`in_words`: "connection
closed", "connection refused", "timed out", ...), for the one line an outage is logged in
instead of pika's internals. A refused login (`login_refused`) is a `BrokerLoginRefused`
naming the user and WXTOKEN_AMQP_URL: a configuration error, not an outage.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pika.exceptions

from ..errors import BrokerError, BrokerLoginRefused, ExchangeMissing, PublishRefused

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


def _words_of(exc: BaseException) -> str:
    """What a pika or socket failure means, in a few words."""
    if isinstance(exc, pika.exceptions.ChannelClosedByBroker):
        return f"channel closed by the broker ({exc.reply_code})"
    if isinstance(exc, (pika.exceptions.NackError, pika.exceptions.UnroutableError)):
        return "publish refused"
    text = f"{exc} {exc!r}"  # pika's connect failures say it only in their args
    if isinstance(exc, ConnectionRefusedError) or "ConnectionRefusedError" in text:
        return "connection refused"
    if isinstance(exc, (TimeoutError, pika.exceptions.AMQPHeartbeatTimeout)) or (
        "timed out" in text.lower() or "Timeout" in text
    ):
        return "timed out"
    if "gaierror" in text or "Name or service not known" in text:
        return "host not found"
    return "connection closed"


def in_words(exc: BrokerError) -> str:
    """What a `BrokerError` from `translated` means in words; its message otherwise."""
    return exc.in_words or str(exc)


def _ours(kind: type[BrokerError], message: str, cause: BaseException) -> BrokerError:
    error = kind(message)
    error.in_words = _words_of(cause)
    return error


@contextmanager
def translated(what: str) -> Iterator[None]:
    """Run the body; any pika failure leaves it as a `BrokerError` saying `what` failed."""
    try:
        yield
    except (pika.exceptions.NackError, pika.exceptions.UnroutableError) as exc:
        raise _ours(PublishRefused, f"{what}: {describe_amqp_error(exc)}", exc) from None
    except pika.exceptions.ChannelClosedByBroker as exc:
        kind = ExchangeMissing if exc.reply_code == _NOT_FOUND else BrokerError
        raise _ours(kind, f"{what}: {describe_amqp_error(exc)}", exc) from None
    except AMQP_ERRORS as exc:
        raise _ours(BrokerError, f"{what}: {describe_amqp_error(exc)}", exc) from None


@contextmanager
def login_refused(user: str | None, vhost: str | None) -> Iterator[None]:
    """Run the body (a connect as `user` to `vhost`); a refused login or vhost leaves it as
    one-line `BrokerLoginRefused` naming the user and the variable to fix."""
    who = f"user {user!r}" if user else "the login"
    try:
        yield
    except pika.exceptions.ProbableAuthenticationError:
        error = BrokerLoginRefused(
            f"the broker refused {who} (ACCESS_REFUSED: wrong user or password): check the "
            "user and password in WXTOKEN_AMQP_URL"
        )
    except pika.exceptions.ProbableAccessDeniedError:
        error = BrokerLoginRefused(
            f"the broker refused {who} access to virtual host {vhost!r} (no such vhost, or no "
            "permission on it): check the vhost in WXTOKEN_AMQP_URL and the user's permissions"
        )
    else:
        return
    error.in_words = "login refused"
    raise error from None
