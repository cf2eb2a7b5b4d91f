"""wxtoken's subscriber library: every service gets the current WeChat token from memory.

from consumer_lib import TokenClient, TokenUnavailable

with TokenClient.from_env() as tokens:
    token = tokens.get_token("wx1234567890abcdef", timeout=5)
"""

from ._client import ClientStats, TokenClient
from .errors import (
    BrokerError,
    ConfigError,
    InvalidUpdate,
    StoreError,
    TokenUnavailable,
    WxTokenError,
)
from .settings import ClientSettings
from .wire.update import TokenKind, TokenSource, TokenUpdate, mask

__all__ = [
    "BrokerError",
    "ClientSettings",
    "ClientStats",
    "ConfigError",
    "InvalidUpdate",
    "StoreError",
    "TokenClient",
    "TokenKind",
    "TokenSource",
    "TokenUnavailable",
    "TokenUpdate",
    "WxTokenError",
    "mask",
]
