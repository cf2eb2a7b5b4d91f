"""The registry as the producer opens it at start, when `WXTOKEN_PLATFORM_DB_URL` is set:
the URL checked, the key file read, the schema migrated (or refused), the registry built.

Only this path imports SQLAlchemy: a producer without platforms never loads it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from consumer_lib.errors import ConfigError
from producer.platform.db.database import create_engine, database_url, redacted
from producer.platform.db.migrations import migrate
from producer.platform.db.registry import PlatformRegistry
from producer.platform.db.sealing import SETTING as KEY_SETTING
from producer.platform.db.sealing import Sealer

log = logging.getLogger(__name__)


def open_registry(
    db_url: str,
    key_file: Path | None,
    *,
    clock: Callable[[], float] = time.time,
) -> PlatformRegistry:
    """Check the settings, bring the schema to this release's head, return the registry.
    `ConfigError` for a bad URL, key file or a schema we do not know; `RegistryUnavailable`
    when the database does not answer."""
    url = database_url(db_url)
    if key_file is None:
        raise ConfigError(f"{KEY_SETTING} must be set when WXTOKEN_PLATFORM_DB_URL is")
    sealer = Sealer.from_file(key_file)
    engine = create_engine(url)
    try:
        revision = migrate(engine)
    except BaseException:
        engine.dispose()
        raise
    log.info(
        "platform registry %s at schema revision %s; sealing with key %s",
        redacted(url),
        revision,
        sealer.sealing_key_id,
    )
    return PlatformRegistry(engine, sealer, clock)
