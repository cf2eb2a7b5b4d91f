"""Settings are read once at an entry point from `WXTOKEN_*` variables (or a `.env` file).

`load_settings()` turns pydantic's validation errors into one `ConfigError` line that
names the variable and what is wrong, so programs can print it and exit without a traceback.
No message ever repeats a URL, so a password in one cannot leak into an error or a log.
"""

from __future__ import annotations

from typing import TypeVar

from pydantic import ValidationError
from pydantic_settings import BaseSettings

from ..errors import ConfigError

ENV_PREFIX = "WXTOKEN_"

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
        message = error["msg"].removeprefix("Value error, ")
        if not loc and env_prefix and message.startswith(env_prefix):
            parts.append(message)  # a check across settings, naming its variables itself
            continue
        name = (env_prefix + loc[0].upper()) if loc else "settings"
        where = ".".join([name, *loc[1:]])
        parts.append(f"{where}: {message}")
    return "; ".join(parts)
