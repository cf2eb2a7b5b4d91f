"""wxtoken's subscriber library: every service gets the current WeChat token from memory.

from consumer_lib import TokenClient, TokenUnavailable

with TokenClient.from_env() as tokens:
    token = tokens.get_token("wx1234567890abcdef", timeout=5)
"""

from ._client import ClientStats, TokenClient
from ._errors import (
    BrokerError,
    ConfigError,
    InvalidUpdate,
    StoreError,
    TokenUnavailable,
    WxTokenError,
)
from ._model import TokenKind, TokenSource, TokenUpdate, mask
from ._settings import ClientSettings

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
