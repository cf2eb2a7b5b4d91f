"""Typed settings, read once at an entry point from `WXTOKEN_*` variables (or a `.env` file).

    schema    CommonSettings (Redis, RabbitMQ, keys: what every part needs), ClientSettings
    urls      the Redis (plain, Sentinel) and broker URLs: parsing and checks
    tls       TLS files, their checks, and the verifying client `SSLContext`
    loading   load_settings(): pydantic's errors as one `ConfigError` line

No message ever repeats a URL, so a password in one cannot leak into an error or a log.
"""

from .gateway import GatewayClientSettings
from .loading import DOTENV, ENV_PREFIX, describe_validation_error, load_settings
from .schema import ClientSettings, CommonSettings
from .tls import TlsFiles, refuse_key_password, tls_context
from .urls import (
    AMQP_SCHEMES,
    AMQP_TLS_SCHEMES,
    DEFAULT_SENTINEL_PORT,
    REDIS_SCHEMES,
    REDIS_TLS_SCHEMES,
    SENTINEL_SCHEMES,
    SentinelUrl,
    is_sentinel_url,
    parse_sentinel_url,
    split_urls,
)

__all__ = [
    "AMQP_SCHEMES",
    "AMQP_TLS_SCHEMES",
    "DEFAULT_SENTINEL_PORT",
    "DOTENV",
    "ENV_PREFIX",
    "REDIS_SCHEMES",
    "REDIS_TLS_SCHEMES",
    "SENTINEL_SCHEMES",
    "ClientSettings",
    "CommonSettings",
    "GatewayClientSettings",
    "SentinelUrl",
    "TlsFiles",
    "describe_validation_error",
    "is_sentinel_url",
    "load_settings",
    "parse_sentinel_url",
    "refuse_key_password",
    "split_urls",
    "tls_context",
]
