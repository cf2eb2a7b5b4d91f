"""The receiver's settings: Redis (for the hint to the leader) plus `WXTOKEN_RECEIVER_*`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr

from consumer_lib.settings import CommonSettings
from producer.platform.receiver._replay import DEFAULT_MAX_REMEMBERED, DEFAULT_WINDOW_S
from producer.platform.receiver._routes import DEFAULT_MAX_BODY_BYTES


class ReceiverSettings(CommonSettings):
    """Everything `wxtoken-platform-receiver` reads from the environment, once, at start."""

    #: The platforms file; the receiver reads each platform's token and EncodingAESKey only.
    platforms_file: Path
    #: The platform registry (as the producer's): every push is stored there before
    #: `success` is answered, and the ticket it carries sealed with the key file's first key.
    platform_db_url: SecretStr | None = None
    platform_key_file: Path | None = None
    receiver_host: str = "127.0.0.1"
    receiver_port: Annotated[int, Field(ge=0, le=65535)] = 8778
    #: Bodies larger than this are refused with 413 (WeChat's pushes are under 2 KiB).
    receiver_max_body_bytes: Annotated[int, Field(ge=1024, le=1_048_576)] = DEFAULT_MAX_BODY_BYTES
    #: A push's timestamp must be within this many seconds of our clock.
    receiver_window_s: Annotated[float, Field(ge=10, le=3600)] = DEFAULT_WINDOW_S
    #: Accepted pushes remembered for replay protection (the oldest go first beyond it).
    receiver_max_remembered: Annotated[int, Field(ge=1000, le=10_000_000)] = DEFAULT_MAX_REMEMBERED
    log_level: Annotated[str, Field(pattern=r"^(DEBUG|INFO|WARNING|ERROR)$")] = "INFO"
