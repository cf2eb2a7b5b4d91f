"""The producer's settings: the common `WXTOKEN_*` ones plus upstream, timing and identity."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field, SecretStr

from consumer_lib.settings import CommonSettings
from consumer_lib.settings.schema import key_files
from producer.apps import is_local_sandbox


def _check_http_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host")
    if parts.scheme == "http" and not is_local_sandbox(url):
        # Classic fetches carry the app secret in the query string.
        raise ValueError(
            "plain http:// is only for a local sandbox (localhost, a loopback address or a "
            "single-label host such as `sandbox`): use https://"
        )
    return url


def _default_producer_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


Seconds = Annotated[float, Field(gt=0, le=86_400)]


class ProducerSettings(CommonSettings):
    """Everything `wxtoken-producer` reads from the environment, once, at start."""

    wechat_base_url: Annotated[str, AfterValidator(_check_http_url)] = "https://api.weixin.qq.com"
    #: WeCom's API (or a sandbox); the same URL checks as the WeChat one.
    wecom_base_url: Annotated[str, AfterValidator(_check_http_url)] = "https://qyapi.weixin.qq.com"
    apps_file: Path
    producer_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:@-]{1,128}$")] = Field(
        default_factory=_default_producer_id
    )
    #: Current tokens are re-published this often, so a subscriber that missed one converges.
    republish_interval_s: Seconds = 60.0
    #: Refresh when this share of the token's lifetime is left ...
    refresh_margin_ratio: Annotated[float, Field(gt=0, lt=1)] = 0.2
    #: ... but never earlier than this before expiry: WeChat renews stable tokens, and keeps
    #: a replaced classic token alive, only in the last 300 s.
    refresh_margin_max_s: Seconds = 300.0
    http_connect_timeout_s: Annotated[float, Field(gt=0, le=60)] = 5.0
    http_read_timeout_s: Annotated[float, Field(gt=0, le=120)] = 10.0
    #: Transient upstream failures retry from this delay, doubling up to the cap.
    retry_base_s: Seconds = 1.0
    retry_cap_s: Seconds = 60.0
    #: Configuration failures (bad secret, IP not whitelisted) retry this slowly.
    config_retry_s: Seconds = 300.0
    #: Quota failures (45009, 45011) back off from this, doubling up to `quota_retry_cap_s`.
    quota_retry_base_s: Seconds = 60.0
    quota_retry_cap_s: Seconds = 3600.0
    #: The leader lease: a dead leader is replaced within this, a stopped one at once.
    lease_ttl_s: Annotated[float, Field(ge=1, le=60)] = 10.0
    heartbeat_s: Annotated[int, Field(ge=0, le=600)] = 30
    reconnect_max_s: Annotated[float, Field(gt=0, le=300)] = 5.0
    log_level: Annotated[str, Field(pattern=r"^(DEBUG|INFO|WARNING|ERROR)$")] = "INFO"
    #: `/metrics`, `/healthz` and `/readyz` on this port (none when unset; 0 picks one).
    metrics_port: Annotated[int, Field(ge=0, le=65535)] | None = None
    metrics_host: str = "127.0.0.1"
    #: Worker threads stepping credentials, and so upstream calls in flight at most.
    upstream_concurrency: Annotated[int, Field(ge=1, le=24)] = 16
    #: An optional cap on upstream calls per second, for the whole producer.
    upstream_rate_per_s: Annotated[float, Field(gt=0, le=10_000)] | None = None
    #: Every credential's snapshot is read from Redis in one batch this often.
    follow_interval_s: Annotated[float, Field(ge=0.1, le=300)] = 5.0
    #: Refreshes refresh requests may cause per app and UTC day, fleet-wide (WeChat's
    #: classic quota is 2,000, its forced stable refreshes 20: the rest is the schedule's).
    requested_refreshes_per_day: Annotated[int, Field(ge=0, le=2000)] = 50
    #: ... at least this far apart per app (a stable app's: at most WeChat's 30 s).
    requested_refresh_interval_s: Annotated[float, Field(ge=0, le=86_400)] = 60.0
    #: A reported token's check upstream (getcallbackip) is reused this long: a flood costs
    #: one check per token per this, and a token revoked during a flood of false reports
    #: about it is refreshed within this.
    token_check_ttl_s: Annotated[float, Field(ge=0, le=3600)] = 60.0
    #: Refresh requests each requester (its broker login, `user_id`; all requests without
    #: one share one allowance) may send per second, and in a burst; the rest is dropped.
    request_rate_per_requester_per_s: Annotated[float, Field(gt=0, le=10_000)] = 1.0
    request_burst_per_requester: Annotated[int, Field(ge=1, le=100_000)] = 30
    #: The public keys whose signatures control requests (`wxtoken quota clear`) need,
    #: comma-separated files or directories of `*.pub`, as WXTOKEN_VERIFY_KEYS. A role of
    #: its own: a key trusted for overrides (the gateway's) cannot clear a quota. Unset,
    #: every control request is refused.
    control_keys: str | None = None
    #: A clear of one app's quota is at least this far from the last (fleet-wide): WeChat
    #: allows 10 a month, so a stolen control key cannot spend them all at once.
    clear_quota_min_interval_s: Annotated[float, Field(ge=0, le=31 * 86_400)] = 3600.0

    def control_key_files(self) -> list[Path]:
        """The files of `control_keys` (a directory: its `*.pub`)."""
        return key_files(self.control_keys)

    #: Third-party platforms: the registry's database (`postgresql+psycopg://...` or
    #: `mysql+pymysql://...`, needs the `platform` extra) and the file of keys sealing its
    #: secrets. Unset: no platform, and SQLAlchemy is never imported.
    platform_db_url: SecretStr | None = None
    platform_key_file: Path | None = None
    #: The platforms file (as the receiver's, with each component secret): the platforms
    #: whose component token and authorizers this producer keeps. Needs the registry.
    platforms_file: Path | None = None
    #: The leader looks for stored pushes this often (the receiver's hint wakes it sooner).
    platform_poll_interval_s: Annotated[float, Field(gt=0, le=60)] = 2.0
    #: Every producer reads the registry's authorizers this often (standbys learn of
    #: authorizations the leader acted on; the leader of recovered ones).
    platform_sync_interval_s: Annotated[float, Field(gt=0, le=3600)] = 30.0
