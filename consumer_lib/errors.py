"""The one error tree of wxtoken; every package raises only these.

    WxTokenError
    ├── ConfigError          a setting, apps file or secret is missing or malformed
    ├── InvalidUpdate        bytes from the wire or Redis that are not a valid token update
    ├── TokenUnavailable     get_token() holds no valid token and none arrived in time
    ├── StoreError           Redis could not be reached or answered nonsense
    │   └── StoreLoginRefused  Redis refused our user or password, or a command (ACL): a
    │                        configuration error, not an outage
    ├── BrokerError          RabbitMQ could not be reached, refused us or closed on us
    │   ├── BrokerLoginRefused  the broker refused our user or password (a configuration
    │   │                    error, not an outage: retried slowly until it is fixed)
    │   ├── ExchangeMissing  a passive declare found no such exchange (404)
    │   └── PublishRefused   the broker nacked a publish (a queue refused it)
    └── UpstreamError        WeChat (or the sandbox) did not give us a token
        (defined in producer.upstream.errors, with its errcode and failure kind)

Third-party exceptions (redis, pika, requests, pydantic) are translated into these in the
module that talks to the service, so callers catch one base class.
"""

from __future__ import annotations


class WxTokenError(Exception):
    """Root of every error wxtoken raises on purpose."""


class ConfigError(WxTokenError):
    """A setting, apps file or secret is missing or malformed; the message names which."""


class InvalidUpdate(WxTokenError):
    """Bytes received from the exchange or Redis that are not a valid token update."""


class TokenUnavailable(WxTokenError):
    """No valid token is held for the app and none arrived within the timeout."""


class StoreError(WxTokenError):
    """Redis could not be reached, timed out, or holds something we cannot use."""


class StoreLoginRefused(StoreError):
    """Redis refused the login (WRONGPASS, NOAUTH) or a command (NOPERM): the message names
    the user and WXTOKEN_REDIS_URL."""


class BrokerError(WxTokenError):
    """RabbitMQ could not be reached, refused the credentials, or closed the channel."""

    #: What happened in a few words ("connection closed"), for an outage's one log line.
    in_words: str | None = None


class BrokerLoginRefused(BrokerError):
    """The broker refused the login (ACCESS_REFUSED: wrong user or password) or the user's
    access to the virtual host: the message names the user and WXTOKEN_AMQP_URL."""


class ExchangeMissing(BrokerError):
    """A passive declare found no such exchange (RabbitMQ's 404 NOT_FOUND)."""


class PublishRefused(BrokerError):
    """The broker nacked a publish: at least one bound queue refused it (a full queue with
    `x-overflow=reject-publish`, say); the others may well have received it."""
