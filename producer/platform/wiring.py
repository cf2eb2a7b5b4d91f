"""The producer's platform parts, made from what `__main__` opened (`PlatformSetup`).

`ProducerService` imports this only when it serves platforms, so SQLAlchemy is loaded
only then.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

import redis

from consumer_lib.wire.keys import KeyLayout
from producer.platform.config import PlatformConfig
from producer.platform.errors import RegistryUnavailable
from producer.platform.keeper import FleetAccess, PlatformKeeper
from producer.platform.registry import PlatformRegistry
from producer.platform.roster import Roster
from producer.platform.tokens import PlatformTokens
from producer.refresh.authorizers import Components
from producer.settings import ProducerSettings
from producer.store.audit import AuditLog
from producer.upstream.openplatform import OpenPlatformClient
from producer.upstream.wechat import pooled_session

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PlatformSetup:
    """The registry (opened and migrated) and the platforms file's platforms, secrets read."""

    registry: PlatformRegistry
    platforms: list[PlatformConfig]


@dataclass(frozen=True)
class PlatformParts:
    """What the service wires before its fleet exists: the fetcher and the roster."""

    setup: PlatformSetup
    tokens: PlatformTokens
    roster: Roster
    components: Components


def platform_parts(
    setup: PlatformSetup,
    settings: ProducerSettings,
    *,
    audit: AuditLog,
    clock: Callable[[], float],
) -> PlatformParts:
    """The platforms' token fetcher and their roster, read once (a registry that does not
    answer now leaves the roster empty: the roster thread reads it again)."""
    client = OpenPlatformClient(
        settings.wechat_base_url,
        session=pooled_session(settings.upstream_concurrency),
        connect_timeout_s=settings.http_connect_timeout_s,
        read_timeout_s=settings.http_read_timeout_s,
    )
    tokens = PlatformTokens(
        registry=setup.registry, client=client, audit=audit, who=settings.producer_id, clock=clock
    )
    roster = Roster(setup.registry, setup.platforms)
    try:
        roster.read()
    except RegistryUnavailable as exc:
        log.warning("platform authorizers not read at start (%s); reading again shortly", exc)
    log.info(
        "registry: %d stored app(s), %d platform(s) with %d authorized authorizer(s)",
        len(roster.stored_apps()),
        len(setup.platforms),
        roster.authorizer_count(),
    )
    return PlatformParts(setup, tokens, roster, Components())


def platform_keeper(
    parts: PlatformParts,
    settings: ProducerSettings,
    *,
    fleet: FleetAccess,
    redis_client: redis.Redis,
    audit: AuditLog,
    stop: threading.Event,
    clock: Callable[[], float],
) -> PlatformKeeper:
    return PlatformKeeper(
        registry=parts.setup.registry,
        roster=parts.roster,
        tokens=parts.tokens,
        components=parts.components,
        fleet=fleet,
        redis_client=redis_client,
        keys=KeyLayout(settings.key_prefix),
        audit=audit,
        who=settings.producer_id,
        stop=stop,
        poll_interval_s=settings.platform_poll_interval_s,
        sync_interval_s=settings.platform_sync_interval_s,
        clock=clock,
    )
