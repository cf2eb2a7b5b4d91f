"""wxtoken's subscriber library: every service gets the current WeChat token from memory.

from consumer_lib import TokenClient, TokenUnavailable

with TokenClient.from_env() as tokens:
    token = tokens.get_token("wx1234567890abcdef", timeout=5)
    ticket = tokens.get_ticket("wx1234567890abcdef", "jsapi")

`consumer_lib.jssdk` signs `wx.config` / `wx.agentConfig` / card calls with those tickets.
"""

from ._client.client import ClientStats, TokenClient
from ._client.reporting import ReportOutcome
from .errors import (
    BrokerError,
    ConfigError,
    InvalidUpdate,
    StoreError,
    TokenUnavailable,
    WxTokenError,
)
from .settings import ClientSettings
from .wire.kinds import Platform
from .wire.update import TokenKind, TokenSource, TokenUpdate, mask

__all__ = [
    "BrokerError",
    "ClientSettings",
    "ClientStats",
    "ConfigError",
    "InvalidUpdate",
    "Platform",
    "ReportOutcome",
    "StoreError",
    "TokenClient",
    "TokenKind",
    "TokenSource",
    "TokenUnavailable",
    "TokenUpdate",
    "WxTokenError",
    "mask",
]
