"""`wxtoken apps import|add|remove|list`: plain apps kept in the platform registry.

A deployment with a database (WXTOKEN_PLATFORM_DB_URL) may keep its apps there instead of, or
beside, the apps file: every producer reads them with the registry (within its
WXTOKEN_PLATFORM_SYNC_INTERVAL_S), so a change takes effect without a restart or a SIGHUP.
Secrets are sealed with WXTOKEN_PLATFORM_KEY_FILE, as the producers' other secrets at rest;
they are read from the environment or files named in the imported file, or from standard
input for `add`, and never printed. An app the apps file also names is served from the file.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from consumer_lib.errors import ConfigError

from .. import _format
from .context import BadConfig, CliError, OpsContext, checked, emit
from .registry import open_registry, registry_settings

_MAX_SECRET_CHARS = 512


def _read_secret() -> str:
    """The app secret from standard input (a hidden prompt on a terminal), never echoed."""
    if sys.stdin is not None and sys.stdin.isatty():
        raw: str = click.prompt("App secret", hide_input=True, err=True)
    else:
        raw = sys.stdin.read(_MAX_SECRET_CHARS + 2) if sys.stdin is not None else ""
    secret = raw.strip()
    if not secret or len(secret) > _MAX_SECRET_CHARS or not secret.isprintable():
        raise click.UsageError(
            "give the app secret on standard input: one line of printable characters"
        )
    return secret


@click.group()
def apps() -> None:
    """Plain apps kept in the registry's database (served beside the apps file)."""


@apps.command("import")
@click.argument("apps_file", type=click.Path(dir_okay=False, path_type=Path))
def import_apps(apps_file: Path) -> None:
    """Store every app of APPS_FILE (the apps file's format, secrets from their *_env or
    *_file); apps stored before under the same ids are replaced."""
    from producer.apps import load_apps

    settings = registry_settings(need_platforms=False)
    try:
        loaded = load_apps(apps_file, wechat_base_url=settings.wechat_base_url)
    except ConfigError as exc:
        raise BadConfig(str(exc)) from None
    with open_registry(settings) as registry:
        count = registry.put_apps(loaded)
    emit(f"stored {count} app(s) from {apps_file}: {', '.join(a.app_id for a in loaded)}")


@apps.command("add")
@click.argument("app_id", callback=checked(_format.check_app_id))
@click.option(
    "--token-api",
    type=click.Choice(["stable", "classic"]),
    default="stable",
    show_default=True,
    help="WeChat's stable_token or the classic token API.",
)
@click.option(
    "--tickets", default="", help="Tickets to keep too: jsapi, wx_card (comma-separated)."
)
def add(app_id: str, token_api: str, tickets: str) -> None:
    """Store one official account or mini-program; its secret is read from standard input.
    (WeCom apps and anything else the apps file can say: `wxtoken apps import`.)"""
    from producer.apps import parse_apps

    settings = registry_settings(need_platforms=False)
    names = [name.strip() for name in tickets.split(",") if name.strip()]
    table = {"app_id": app_id, "token_api": token_api, "tickets": names}
    table["secret_env"] = "WXTOKEN_CLI_APP_SECRET"
    try:
        (app,) = parse_apps(
            {"apps": [table]},
            source="the command line",
            wechat_base_url=settings.wechat_base_url,
            environ={"WXTOKEN_CLI_APP_SECRET": _read_secret()},
        )
    except ConfigError as exc:
        raise BadConfig(str(exc)) from None
    with open_registry(settings) as registry:
        registry.put_apps([app])
    emit(f"stored {app_id}; the producers serve it within WXTOKEN_PLATFORM_SYNC_INTERVAL_S")


@apps.command("remove")
@click.argument("app_id", callback=checked(_format.check_app_id))
def remove(app_id: str) -> None:
    """Delete a stored app: the producers stop refreshing it (its snapshot expires)."""
    settings = registry_settings(need_platforms=False)
    with open_registry(settings) as registry:
        if not registry.remove_app(app_id):
            raise CliError(f"no app {app_id} is stored")
    emit(f"removed {app_id}")


@apps.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per app.")
@click.pass_obj
def list_apps(obj: OpsContext, as_json: bool) -> None:
    """The stored apps (no secret), and any row that does not make an app."""
    del obj
    settings = registry_settings(need_platforms=False)
    with open_registry(settings) as registry:
        stored, broken = registry.stored_apps()
    for app in stored:
        shown = app.model_dump(mode="json", exclude={"secret"})
        if as_json:
            emit(json.dumps(shown, sort_keys=True))
        else:
            extra = f" tickets={','.join(shown['tickets'])}" if shown["tickets"] else ""
            emit(f"{app.app_id}  {shown['platform']}  {shown['token_api']}{extra}")
    for line in broken:
        emit(f"not an app: {line}", err=True)
    if broken:
        raise SystemExit(1)
