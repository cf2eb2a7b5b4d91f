"""Comparing WeChat's list of a platform's authorizers with the registry, and recovering.

`api_get_authorizer_list` names every account that has authorized the platform, each with
its refresh token ("" while its code was never redeemed). It is the way back after a loss
(a database restored from an old backup, an `authorized` push never received):

- listed with a refresh token, but not `authorized` with one in the registry: the refresh
  token is stored (`authorize`) and the authorizer is served again: **recovered**;
- listed without a refresh token and not `authorized` here: **unrecoverable** (its code was
  never redeemed; the customer must authorize again);
- `authorized` here but not listed by WeChat: **not listed** (revoked without our seeing
  the push, most likely; its next refresh gets 61023 and marks it).

The leader reconciles each platform once its component token is held, after it takes the
lease; `wxtoken platform reconcile` does it on demand. Each call costs one list call per
500 authorizers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from consumer_lib.wire.authorizers import authorizer_app_id
from producer.platform.db.records import Authorizer
from producer.platform.db.registry import MAX_PAGE, PlatformRegistry
from producer.store.audit import AuditEvent, AuditLog
from producer.upstream.openplatform import MAX_LIST_COUNT, ListedAuthorizer, OpenPlatformClient

log = logging.getLogger(__name__)

#: At most this many list calls per reconciliation (5,000,000 authorizers).
MAX_LIST_CALLS = 10_000


@dataclass
class Reconciled:
    """What one reconciliation of one platform found and did (authorizer appids)."""

    component_appid: str
    listed: int = 0
    already: int = 0
    recovered: list[str] = field(default_factory=list)
    unrecoverable: list[str] = field(default_factory=list)
    not_listed: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"{self.component_appid}: {self.listed} listed by WeChat, {self.already} in order, "
            f"{len(self.recovered)} recovered, {len(self.unrecoverable)} unrecoverable, "
            f"{len(self.not_listed)} authorized here but not listed"
        )


def _registry_rows(registry: PlatformRegistry, component: str) -> dict[str, Authorizer]:
    rows: dict[str, Authorizer] = {}
    after: str | None = None
    while True:
        page = registry.authorizers(component, after=after, limit=MAX_PAGE)
        rows.update((row.authorizer_appid, row) for row in page)
        if len(page) < MAX_PAGE:
            return rows
        after = page[-1].authorizer_appid


def _listed(
    client: OpenPlatformClient, component_token: str, component: str
) -> list[ListedAuthorizer]:
    listed: list[ListedAuthorizer] = []
    for _ in range(MAX_LIST_CALLS):
        total, page = client.authorizer_list(
            component_token, component, offset=len(listed), count=MAX_LIST_COUNT
        )
        listed.extend(page)
        if not page or len(listed) >= total:
            break
    return listed


def reconcile(
    registry: PlatformRegistry,
    client: OpenPlatformClient,
    component_appid: str,
    component_token: str,
    *,
    audit: AuditLog | None = None,
    who: str = "reconcile",
) -> Reconciled:
    """Reconcile one platform (see the module docstring). `UpstreamError` and
    `RegistryUnavailable` propagate; what was recovered before one stays recovered."""
    done = Reconciled(component_appid)
    rows = _registry_rows(registry, component_appid)
    listed = _listed(client, component_token, component_appid)
    done.listed = len(listed)
    seen: set[str] = set()
    for entry in listed:
        appid = entry.authorizer_appid
        seen.add(appid)
        row = rows.get(appid)
        if row is not None and row.state == "authorized" and row.has_refresh_token:
            done.already += 1
            continue
        if not entry.refresh_token:
            done.unrecoverable.append(appid)
            continue
        version = registry.authorize(
            component_appid, appid, entry.refresh_token, auth_time_s=entry.auth_time_s
        )
        done.recovered.append(appid)
        if audit is not None:
            audit.record(
                AuditEvent.REFRESH_TOKEN_RECOVERED,
                authorizer_app_id(component_appid, appid),
                who=who,
                reason=f"from api_get_authorizer_list (was {row.state if row else 'unknown'}); "
                f"refresh token v{version}",
            )
    done.not_listed = sorted(
        appid for appid, row in rows.items() if row.state == "authorized" and appid not in seen
    )
    log.info("reconciled %s", done.summary())
    return done
