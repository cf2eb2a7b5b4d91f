"""Typed settings read once at an entry point from `WXTOKEN_*` variables (or a `.env` file).

`load_settings()` turns pydantic's validation errors into one `ConfigError` line that
names the variable and what is wrong, so programs can print it and exit without a traceback.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, TypeVar
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from ._errors import ConfigError

ENV_PREFIX = "WXTOKEN_"


def _url_with_scheme(*schemes: str) -> Callable[[str], str]:
    """A validator accepting URLs of `schemes` with a host (but unix://) and a numeric port."""

    def check(url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in schemes:
            wanted = ", ".join(f"{s}://" for s in schemes)
            raise ValueError(f"scheme must be one of {wanted}, got {parts.scheme!r}")
        if parts.scheme != "unix" and not parts.hostname:
            raise ValueError("no host in URL")
        try:
            parts.port  # noqa: B018 - raises ValueError on a non-numeric port
        except ValueError as exc:
            raise ValueError(f"bad port: {exc}") from None
        return url

    return check


RedisUrl = Annotated[str, AfterValidator(_url_with_scheme("redis", "rediss", "unix"))]
AmqpUrl = Annotated[str, AfterValidator(_url_with_scheme("amqp", "amqps"))]
ExchangeName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,200}$")]
KeyPrefix = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]


class CommonSettings(BaseSettings):
    """What every part of wxtoken needs to find Redis and RabbitMQ."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_file=".env", extra="ignore", frozen=True
    )

    redis_url: RedisUrl = "redis://127.0.0.1:6379/0"
    amqp_url: AmqpUrl = "amqp://guest:guest@127.0.0.1:5672/%2F"
    exchange: ExchangeName = "wxtoken.tokens"
    #: Every Redis key wxtoken uses starts with this, so several deployments can share a DB.
    key_prefix: KeyPrefix = "wxtoken"
    redis_timeout_s: Annotated[float, Field(gt=0, le=60)] = 2.0


class ClientSettings(CommonSettings):
    """Settings of a subscribing service (`TokenClient`); no app secret is ever needed."""

    #: Longest wait between reconnect attempts to the broker (jittered, capped backoff).
    reconnect_max_s: Annotated[float, Field(gt=0, le=300)] = 3.0
    #: How often the snapshot in Redis is polled while the broker is unreachable.
    poll_interval_s: Annotated[float, Field(gt=0, le=300)] = 2.0
    #: AMQP heartbeat; pika's connection thread answers it.
    heartbeat_s: Annotated[int, Field(ge=0, le=600)] = 30


SettingsT = TypeVar("SettingsT", bound=BaseSettings)


def load_settings(cls: type[SettingsT], **overrides: object) -> SettingsT:
    """Build settings from the environment; a bad value raises one-line `ConfigError`."""
    try:
        return cls(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, env_prefix=ENV_PREFIX)) from None


def describe_validation_error(exc: ValidationError, *, env_prefix: str = "") -> str:
    """`WXTOKEN_REDIS_URL: scheme must be ...` for each bad field, joined on one line."""
    parts = []
    for error in exc.errors(include_input=False, include_url=False):
        loc = [str(p) for p in error["loc"]]
        name = (env_prefix + loc[0].upper()) if loc else "settings"
        where = ".".join([name, *loc[1:]])
        message = error["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {message}")
    return "; ".join(parts)
