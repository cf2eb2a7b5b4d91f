"""The settings classes: what every part of wxtoken reads, and what a subscriber adds."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Self
from urllib.parse import urlsplit

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .loading import ENV_PREFIX
from .tls import TlsFile, TlsFiles, check_tls_files, tls_files
from .urls import (
    AMQP_TLS_SCHEMES,
    REDIS_TLS_SCHEMES,
    AmqpUrl,
    ExchangeName,
    KeyPrefix,
    RedisUrl,
    split_urls,
)


class CommonSettings(BaseSettings):
    """What every part of wxtoken needs to find Redis and RabbitMQ."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_file=None, extra="ignore", frozen=True
    )

    redis_url: RedisUrl = "redis://127.0.0.1:6379/0"
    amqp_url: AmqpUrl = "amqp://guest:guest@127.0.0.1:5672/%2F"
    exchange: ExchangeName = "wxtoken.tokens"
    #: Every Redis key wxtoken uses starts with this, so several deployments can share a DB.
    key_prefix: KeyPrefix = "wxtoken"
    redis_timeout_s: Annotated[float, Field(gt=0, le=60)] = 2.0
    #: TLS to Redis (a `rediss://` URL): extra CA bundle, client certificate and key (PEM).
    redis_tls_ca_file: TlsFile = None
    redis_tls_cert_file: TlsFile = None
    redis_tls_key_file: TlsFile = None
    #: TLS to RabbitMQ (`amqps://` URLs): the same, for every broker in the list.
    amqp_tls_ca_file: TlsFile = None
    amqp_tls_cert_file: TlsFile = None
    amqp_tls_key_file: TlsFile = None

    @property
    def redis_tls(self) -> TlsFiles | None:
        """The Redis TLS files for `connect_redis(..., tls=)`; None when none are set."""
        return tls_files(self.redis_tls_ca_file, self.redis_tls_cert_file, self.redis_tls_key_file)

    @property
    def amqp_tls(self) -> TlsFiles | None:
        """The broker TLS files for `connection_parameters(..., tls=)`; None when none are set."""
        return tls_files(self.amqp_tls_ca_file, self.amqp_tls_cert_file, self.amqp_tls_key_file)

    @model_validator(mode="after")
    def _check_tls(self) -> Self:
        """TLS files only with TLS URLs, cert and key together, and files that load."""
        check_tls_files(
            "redis",
            self.redis_tls,
            schemes=[urlsplit(self.redis_url).scheme.lower()],
            wanted=REDIS_TLS_SCHEMES,
        )
        check_tls_files(
            "amqp",
            self.amqp_tls,
            schemes=[urlsplit(one).scheme.lower() for one in split_urls(self.amqp_url)],
            wanted=AMQP_TLS_SCHEMES,
        )
        return self

    #: Ed25519 private key (PEM) that signs updates: the producer's, or an operator's.
    signing_key_file: Path | None = None
    #: Public keys (PEM files, comma-separated) that updates must be signed with.
    verify_keys: str | None = None
    #: Accept unsigned updates (tests, the sandbox demo); a subscriber warns once.
    insecure_accept_unsigned: bool = False

    def verify_key_files(self) -> list[Path]:
        """The listed public key files; a directory stands for every `*.pub` in it (sorted),
        so compose can trust whatever operators' keys deploy/keys holds."""
        return key_files(self.verify_keys)


def key_files(listed: str | None) -> list[Path]:
    """Comma-separated public key files; a directory stands for every `*.pub` in it."""
    files: list[Path] = []
    for entry in (listed or "").split(","):
        if not entry.strip():
            continue
        path = Path(entry.strip())
        files.extend(sorted(path.glob("*.pub")) if path.is_dir() else [path])
    return files


class ClientSettings(CommonSettings):
    """Settings of a subscribing service (`TokenClient`); no app secret is ever needed."""

    #: Longest wait between reconnect attempts to the broker (jittered, capped backoff).
    reconnect_max_s: Annotated[float, Field(gt=0, le=300)] = 3.0
    #: How often the snapshot in Redis is polled while the broker is unreachable.
    poll_interval_s: Annotated[float, Field(gt=0, le=300)] = 2.0
    #: AMQP heartbeat; pika's connection thread answers it.
    heartbeat_s: Annotated[int, Field(ge=0, le=600)] = 30
    #: Broker users allowed to publish updates (comma-separated, e.g.
    #: "wxtoken-producer,wxtoken-ops"); empty trusts any user the broker lets publish.
    trusted_publishers: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.@, -]*$")] = ""

    def trusted_publisher_names(self) -> frozenset[str]:
        return frozenset(n.strip() for n in self.trusted_publishers.split(",") if n.strip())
