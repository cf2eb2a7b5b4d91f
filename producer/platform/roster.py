"""Which credentials from the registry a producer serves: each platform's component token,
the token (and configured tickets) of every authorizer the registry holds as `authorized`,
and the plain apps stored there (`wxtoken apps import/add/remove`).

Every producer, leader or standby, reads the roster (a standby must hold the same
credentials to take over), at start and every `WXTOKEN_PLATFORM_SYNC_INTERVAL_S`; the
leader also right after it acted on pushes. Reading pages through the registry (1,000 rows
a query); the `AppConfig` of an authorizer seen before is reused, so an unchanged roster
costs the queries and no fleet change.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from pydantic import SecretStr

from consumer_lib.wire.authorizers import authorizer_app_id
from producer.app_config import AppConfig, TokenApi
from producer.platform.config import PlatformConfig
from producer.platform.db.registry import MAX_PAGE, PlatformRegistry

log = logging.getLogger(__name__)


def component_app(platform: PlatformConfig) -> AppConfig:
    """The component token's credential of `platform` (needs its secret)."""
    if platform.secret is None:
        raise ValueError(f"{platform.component_appid}: loaded without its component secret")
    return AppConfig(
        app_id=platform.component_appid,
        secret=platform.secret,
        token_api=TokenApi.COMPONENT,
        component_appid=platform.component_appid,
    )


def authorizer_app(platform: PlatformConfig, authorizer_appid: str) -> AppConfig:
    """The credential of one authorizer of `platform` (its refresh token is in the registry)."""
    return AppConfig(
        app_id=authorizer_app_id(platform.component_appid, authorizer_appid),
        secret=SecretStr(""),
        token_api=TokenApi.AUTHORIZER,
        component_appid=platform.component_appid,
        authorizer_appid=authorizer_appid,
        tickets=platform.authorizer_tickets,
    )


class Roster:
    """The platform credentials to serve, as last read from the registry; thread-safe."""

    def __init__(self, registry: PlatformRegistry, platforms: Sequence[PlatformConfig]) -> None:
        self._registry = registry
        self._platforms = {p.component_appid: p for p in platforms}
        self._components = [component_app(p) for p in platforms]
        self._lock = threading.Lock()
        self._authorizers: dict[str, AppConfig] = {}
        self._stored: list[AppConfig] = []
        self._broken: list[str] = []
        #: Added by the leader since the last read began (a read that started before the
        #: authorization was committed must not drop it).
        self._added: dict[str, AppConfig] = {}

    @property
    def platforms(self) -> dict[str, PlatformConfig]:
        return dict(self._platforms)

    def apps(self) -> list[AppConfig]:
        """Every platform credential: the component tokens first, then the authorizers."""
        with self._lock:
            return [*self._components, *self._authorizers.values()]

    def stored_apps(self) -> list[AppConfig]:
        """The plain apps stored in the registry, as last read."""
        with self._lock:
            return list(self._stored)

    def authorizer_count(self) -> int:
        with self._lock:
            return len(self._authorizers)

    def read(self) -> bool:
        """Read the stored apps and the authorized authorizers of every platform; True when
        either changed. `RegistryUnavailable` leaves the roster as it was."""
        stored, broken = self._registry.stored_apps()
        if broken != self._broken:
            for line in broken:
                log.error("stored app not served: %s", line)
        with self._lock:
            known = dict(self._authorizers)
            self._added = {}
        seen: dict[str, AppConfig] = {}
        for component, platform in self._platforms.items():
            after: str | None = None
            while True:
                page = self._registry.authorizers(
                    component, "authorized", after=after, limit=MAX_PAGE
                )
                for row in page:
                    app_id = authorizer_app_id(component, row.authorizer_appid)
                    seen[app_id] = known.get(app_id) or authorizer_app(
                        platform, row.authorizer_appid
                    )
                if len(page) < MAX_PAGE:
                    break
                after = page[-1].authorizer_appid
        with self._lock:
            for app_id, app in self._added.items():
                seen.setdefault(app_id, app)
            changed = seen.keys() != self._authorizers.keys() or stored != self._stored
            self._authorizers = seen
            self._stored, self._broken = stored, broken
        return changed

    def add(self, component_appid: str, authorizer_appid: str) -> bool:
        """Serve this authorizer from now on (an authorization just stored); True if new."""
        platform = self._platforms.get(component_appid)
        if platform is None:
            return False
        app = authorizer_app(platform, authorizer_appid)
        with self._lock:
            self._added[app.app_id] = app
            if app.app_id in self._authorizers:
                return False
            self._authorizers[app.app_id] = app
            return True

    def drop(self, component_appid: str, authorizer_appid: str) -> bool:
        """Stop serving this authorizer (revoked, or needing re-authorization)."""
        app_id = authorizer_app_id(component_appid, authorizer_appid)
        with self._lock:
            self._added.pop(app_id, None)
            return self._authorizers.pop(app_id, None) is not None
