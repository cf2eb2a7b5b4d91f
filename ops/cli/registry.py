"""The platform registry as the CLI opens it (`wxtoken platform ...`, `wxtoken apps ...`):
where a producer runs, with its WXTOKEN_PLATFORM_DB_URL and WXTOKEN_PLATFORM_KEY_FILE.
The `platform` extra is imported only here, only when such a command runs."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from consumer_lib.errors import ConfigError
from consumer_lib.settings import DOTENV, CommonSettings, load_settings

from .context import BadConfig, CliError


class RegistrySettings(CommonSettings):
    """What the registry's commands need beyond the common settings."""

    platform_db_url: SecretStr | None = None
    platform_key_file: Path | None = None
    platforms_file: Path | None = None
    wechat_base_url: str = "https://api.weixin.qq.com"


def registry_settings(*, need_platforms: bool) -> RegistrySettings:
    """The settings; `BadConfig` (exit 2) when one the command needs is missing."""
    try:
        settings = load_settings(RegistrySettings, DOTENV)
    except ConfigError as exc:
        raise BadConfig(str(exc)) from None
    if settings.platform_db_url is None:
        raise BadConfig(
            "set WXTOKEN_PLATFORM_DB_URL and WXTOKEN_PLATFORM_KEY_FILE (as the producer's)"
        )
    if need_platforms and settings.platforms_file is None:
        raise BadConfig("set WXTOKEN_PLATFORMS_FILE (as the producer's)")
    return settings


@contextmanager
def open_registry(settings: RegistrySettings) -> Iterator[Any]:
    """The registry (migrated), closed on exit; its failures become one-line CLI errors."""
    try:
        from producer.platform.errors import RegistryUnavailable
        from producer.platform.startup import open_registry as open_it
    except ImportError as exc:
        raise BadConfig(f"this command needs the platform extra: {exc}") from None
    assert settings.platform_db_url is not None
    try:
        registry = open_it(settings.platform_db_url.get_secret_value(), settings.platform_key_file)
    except ConfigError as exc:
        raise BadConfig(str(exc)) from None
    except RegistryUnavailable as exc:
        raise CliError(str(exc)) from None
    try:
        yield registry
    except RegistryUnavailable as exc:
        raise CliError(str(exc)) from None
    finally:
        registry.close()
