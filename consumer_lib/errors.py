"""The one error tree of wxtoken; every package raises only these.

    WxTokenError
    ├── ConfigError          a setting, apps file or secret is missing or malformed
    ├── InvalidUpdate        bytes from the wire or Redis that are not a valid token update
    ├── TokenUnavailable     get_token() holds no valid token and none arrived in time
    ├── StoreError           Redis could not be reached or answered nonsense
    ├── BrokerError          RabbitMQ could not be reached, refused us or closed on us
    └── UpstreamError        WeChat (or the sandbox) did not give us a token
        (defined in producer.wechat, with its errcode and category)

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


class BrokerError(WxTokenError):
    """RabbitMQ could not be reached, refused the credentials, or closed the channel."""
