"""`wxtoken platform status` and `wxtoken platform reconcile`: third-party platforms.

Both read the platform registry, so they run where a producer runs: with
WXTOKEN_PLATFORM_DB_URL, WXTOKEN_PLATFORM_KEY_FILE and WXTOKEN_PLATFORMS_FILE (the component
secret is not read) beside the usual Redis settings. `status` exits 1 when a platform needs
an operator now (no verify ticket, or one older than 12 hours; no valid component token),
0 otherwise; `reconcile` exits 1 when an authorizer cannot be recovered.
"""

from __future__ import annotations

import json
from typing import Any

import click

from consumer_lib.errors import ConfigError
from consumer_lib.wire.kinds import TokenKind

from .context import BadConfig, CliError, OpsContext, audit_log, emit
from .registry import RegistrySettings, open_registry, registry_settings

#: A verify ticket older than this is a warning (WeChat pushes one every 10 minutes) ...
TICKET_WARN_AGE_S = 3600.0
#: ... and older than this an error: it has expired (12 hours), no component token can be had.
TICKET_ERROR_AGE_S = 12 * 3600.0
_LISTED = 20


def _platforms(settings: RegistrySettings, only: str | None) -> list[str]:
    from producer.platform.config import load_platforms

    assert settings.platforms_file is not None
    try:
        found = [
            p.component_appid for p in load_platforms(settings.platforms_file, with_secret=False)
        ]
    except ConfigError as exc:
        raise BadConfig(str(exc)) from None
    if only is not None:
        if only not in found:
            raise BadConfig(f"{only} is not in the platforms file")
        return [only]
    return found


def _age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


@click.group()
def platform() -> None:
    """Third-party platforms (open platform): their tickets, tokens and authorizers."""


@platform.command()
@click.argument("component_appid", required=False)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per platform.")
@click.pass_obj
def status(obj: OpsContext, component_appid: str | None, as_json: bool) -> None:
    """Each platform's verify ticket, component token and authorizers by state."""
    settings = registry_settings(need_platforms=True)
    needs_operator = False
    platforms = _platforms(settings, component_appid)  # a bad argument: before any connection
    with open_registry(settings) as registry:
        for appid in platforms:
            shown = _platform_status(obj, registry, appid)
            needs_operator |= bool(shown["problems"])
            if as_json:
                emit(json.dumps(shown, sort_keys=True))
            else:
                _print_status(shown)
    if needs_operator:
        raise SystemExit(1)


def _platform_status(obj: OpsContext, registry: Any, appid: str) -> dict[str, Any]:
    now_s = obj.clock()
    problems: list[str] = []
    ticket = registry.verify_ticket(appid)
    ticket_age_s = None if ticket is None else round(ticket.age_s, 1)
    if ticket is None:
        problems.append("no verify ticket stored: is the receiver reachable by WeChat?")
    elif ticket.age_s > TICKET_ERROR_AGE_S:
        problems.append(f"the verify ticket is {_age(ticket.age_s)} old: expired")
    warnings: list[str] = []
    if ticket is not None and TICKET_WARN_AGE_S < ticket.age_s <= TICKET_ERROR_AGE_S:
        warnings.append(f"the verify ticket is {_age(ticket.age_s)} old (pushes every 10 min)")
    try:
        token = obj.stored_update(appid, TokenKind.ACCESS_TOKEN)
    except CliError:
        token = None
    if token is None or not token.is_valid_at(now_s):
        problems.append("no valid component token in Redis")
    counts = registry.counts(appid)
    needing = registry.authorizers(appid, "needs_reauthorization", limit=_LISTED)
    pending = registry.authorizers(appid, "pending_code", limit=_LISTED)
    unprocessed = [c for c in registry.unprocessed_callbacks(1000) if c.component_appid == appid]
    return {
        "component_appid": appid,
        "verify_ticket_age_s": ticket_age_s,
        "component_token": None
        if token is None
        else {"version": token.version, "expires_in_s": round(token.expires_at - now_s, 1)},
        "authorizers": counts,
        "needs_reauthorization": [
            {"authorizer_appid": a.authorizer_appid, "reason": a.reason} for a in needing
        ],
        "pending_code": [a.authorizer_appid for a in pending],
        "unprocessed_pushes": len(unprocessed),
        "oldest_unprocessed_age_s": None
        if not unprocessed
        else round(now_s - unprocessed[0].received_at_s, 1),
        "warnings": warnings,
        "problems": problems,
    }


def _print_status(shown: dict[str, Any]) -> None:
    emit(f"platform {shown['component_appid']}")
    age = shown["verify_ticket_age_s"]
    emit(f"  verify ticket:   {'none stored' if age is None else 'received ' + _age(age) + ' ago'}")
    token = shown["component_token"]
    emit(
        "  component token: "
        + (
            "none"
            if token is None
            else f"v{token['version']}, expires in {_age(token['expires_in_s'])}"
        )
    )
    counts = shown["authorizers"]
    emit("  authorizers:     " + ", ".join(f"{n} {state}" for state, n in counts.items()))
    for entry in shown["needs_reauthorization"]:
        emit(f"  must authorize again: {entry['authorizer_appid']} ({entry['reason']})")
    for appid in shown["pending_code"]:
        emit(f"  code not redeemed:    {appid} (`wxtoken platform reconcile` may recover it)")
    emit(f"  unprocessed pushes: {shown['unprocessed_pushes']}")
    for line in shown["warnings"]:
        emit(f"  WARNING: {line}")
    for line in shown["problems"]:
        emit(f"  ERROR: {line}")


@platform.command()
@click.argument("component_appid", required=False)
@click.pass_obj
def reconcile(obj: OpsContext, component_appid: str | None) -> None:
    """Compare WeChat's list of authorizers with the registry; recover refresh tokens.

    Uses the component token the producers keep in Redis (one api_get_authorizer_list call
    per 500 authorizers); a recovered authorizer is served by the producers within their
    WXTOKEN_PLATFORM_SYNC_INTERVAL_S. Every recovery is in the audit trail.
    """
    from producer.platform.reconcile import reconcile as run
    from producer.upstream.errors import UpstreamError
    from producer.upstream.openplatform import OpenPlatformClient

    settings = registry_settings(need_platforms=True)
    client = OpenPlatformClient(settings.wechat_base_url)
    unrecoverable = 0
    try:
        platforms = _platforms(settings, component_appid)
        with open_registry(settings) as registry:
            for appid in platforms:
                token = obj.stored_update(appid, TokenKind.ACCESS_TOKEN)
                if not token.is_valid_at(obj.clock()):
                    raise CliError(f"{appid}: the stored component token has expired")
                try:
                    done = run(
                        registry,
                        client,
                        appid,
                        token.value,
                        audit=audit_log(obj),
                        who=f"ops:{obj.operator}",
                    )
                except UpstreamError as exc:
                    raise CliError(f"{appid}: {exc}") from None
                emit(done.summary())
                for what, appids in (
                    ("recovered", done.recovered),
                    ("unrecoverable (must authorize again)", done.unrecoverable),
                    ("authorized here, not listed by WeChat", done.not_listed),
                ):
                    if appids:
                        emit(f"  {what}: {', '.join(appids)}")
                unrecoverable += len(done.unrecoverable)
    finally:
        client.close()
    if unrecoverable:
        raise SystemExit(1)
