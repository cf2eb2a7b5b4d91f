"""The producer's app list: a TOML file with one `[[apps]]` table per app.

    [[apps]]
    app_id = "wx1234567890abcdef"
    secret_env = "WX_MAIN_SECRET"      # or: secret_file = "/run/secrets/wx_main"
    token_api = "stable"               # or "classic"
    tickets = ["jsapi", "wx_card"]     # optional: the tickets kept besides the token

    [[apps]]                           # a WeCom app: one agent of a corp, its own secret
    app_id = "hr-portal"               # the name services ask for
    platform = "wecom"
    corp_id = "ww1234567890abcdef"
    agent_id = 1000002
    secret_env = "WECOM_HR_SECRET"
    tickets = ["corp_jsapi", "agent_config"]

An inline `secret = "..."` is accepted only when the upstream is a local sandbox (a
loopback address, `localhost`, or a one-label host such as compose's `sandbox`), and then
with a warning. A relative `secret_file` is relative to the apps file's folder. Secrets are
held as `SecretStr`, so they never show in a `repr`, a log line or an exception.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, StrictInt, ValidationError

from consumer_lib.errors import ConfigError
from consumer_lib.wire.kinds import TICKET_NAMES, Platform, TokenKind, tickets_of
from consumer_lib.wire.update import AppId
from producer.app_config import AppConfig as AppConfig  # re-exported: the apps file's result
from producer.app_config import Credential as Credential
from producer.app_config import TokenApi as TokenApi
from producer.config_files import checked_secret, read_toml, secret_from

log = logging.getLogger(__name__)

DEFAULT_WECOM_BASE_URL = "https://qyapi.weixin.qq.com"


def is_local_sandbox(url: str) -> bool:
    """True for upstreams that can only be a local stand-in, never WeChat itself."""
    host = (urlsplit(url).hostname or "").lower().rstrip(".")
    if host == "localhost" or (host and "." not in host and ":" not in host):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _AppEntry(BaseModel):
    """An `[[apps]]` table as written in the file, before the secret is resolved."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    app_id: AppId
    token_api: TokenApi | None = None
    platform: Platform = Platform.WECHAT
    corp_id: str | None = None
    agent_id: StrictInt | str | None = None
    tickets: list[str] = []
    secret_env: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")] | None = None
    secret_file: Path | None = None
    secret: SecretStr | None = None


def load_apps(
    path: Path,
    *,
    wechat_base_url: str,
    wecom_base_url: str = DEFAULT_WECOM_BASE_URL,
    environ: Mapping[str, str] | None = None,
) -> list[AppConfig]:
    """Read and check the apps file; any problem raises one-line `ConfigError`."""
    environ = os.environ if environ is None else environ
    data = read_toml(path, what="apps file")
    return parse_apps(
        data,
        source=str(path),
        wechat_base_url=wechat_base_url,
        wecom_base_url=wecom_base_url,
        environ=environ,
        base_dir=path.parent,
    )


def parse_apps(
    data: dict[str, Any],
    *,
    source: str,
    wechat_base_url: str,
    environ: Mapping[str, str],
    wecom_base_url: str = DEFAULT_WECOM_BASE_URL,
    base_dir: Path | None = None,
) -> list[AppConfig]:
    """Turn parsed TOML into app configs, resolving each secret (relative secret files
    against `base_dir`)."""
    unknown = set(data) - {"apps"}
    if unknown:
        raise ConfigError(f"apps file {source}: unknown top-level keys {sorted(unknown)}")
    tables = data.get("apps")
    if not isinstance(tables, list) or not tables:
        raise ConfigError(f"apps file {source}: needs at least one [[apps]] table")
    inline_allowed = {
        Platform.WECHAT: is_local_sandbox(wechat_base_url),
        Platform.WECOM: is_local_sandbox(wecom_base_url),
    }
    apps: list[AppConfig] = []
    seen: set[str] = set()
    for index, table in enumerate(tables):
        where = f"apps file {source}: apps[{index}]"
        named = table.get("app_id") if isinstance(table, dict) else None
        if isinstance(named, str) and re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", named):
            where = f"{where} ({named})"
        try:
            entry = _AppEntry.model_validate(table)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'table'}: {e['msg']}"
                for e in exc.errors(include_input=False, include_url=False)
            )
            raise ConfigError(f"{where}: {problems}") from None
        if named != entry.app_id:
            where = f"{where} ({entry.app_id})"
        if entry.app_id in seen:
            raise ConfigError(f"{where}: duplicate app_id")
        seen.add(entry.app_id)
        if base_dir is not None and entry.secret_file is not None:
            entry = entry.model_copy(update={"secret_file": base_dir / entry.secret_file})
        secret = _resolve_secret(
            entry, where=where, inline_allowed=inline_allowed[entry.platform], environ=environ
        )
        app = _app_config(entry, secret, where=where)
        _check_against_others(app, apps, where=where)
        apps.append(app)
    return apps


def _app_config(entry: _AppEntry, secret: SecretStr, *, where: str) -> AppConfig:
    allowed = tickets_of(entry.platform)
    tickets: list[TokenKind] = []
    for name in entry.tickets:
        kind = TICKET_NAMES.get(name)
        if kind is None or name not in allowed:
            shown = name if re.fullmatch(r"[a-z0-9_]{1,24}", name) else f"<{len(name)} chars>"
            raise ConfigError(
                f"{where}: unknown ticket {shown!r} for platform {entry.platform}; "
                f"use some of {sorted(allowed)}"
            )
        tickets.append(kind)
    if entry.token_api in (TokenApi.COMPONENT, TokenApi.AUTHORIZER):
        raise ConfigError(
            f"{where}: token_api {entry.token_api!s} is not for the apps file: a platform's "
            "component token and its authorizers come from WXTOKEN_PLATFORMS_FILE and the "
            "platform registry"
        )
    wecom = entry.platform is Platform.WECOM
    default_api = TokenApi.WECOM if wecom else TokenApi.STABLE
    try:
        return AppConfig(
            app_id=entry.app_id,
            secret=secret,
            token_api=entry.token_api or default_api,
            platform=entry.platform,
            corp_id=entry.corp_id,
            agent_id=None if entry.agent_id is None else str(entry.agent_id),
            tickets=tuple(tickets),
        )
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'table'}: {e['msg']}".removeprefix(
                "table: Value error, "
            )
            for e in exc.errors(include_input=False, include_url=False)
        )
        raise ConfigError(f"{where}: {problems}") from None


def _check_against_others(app: AppConfig, others: list[AppConfig], *, where: str) -> None:
    """One WeCom agent is one app, and two agents never share a secret (their tokens
    would be one token, the 301002 mistake)."""
    if app.platform is not Platform.WECOM:
        return
    for other in others:
        if other.platform is not Platform.WECOM or other.corp_id != app.corp_id:
            continue
        if other.agent_id == app.agent_id:
            raise ConfigError(
                f"{where}: WeCom agent {app.wecom_agent} is already app {other.app_id!r}"
            )
        if other.secret.get_secret_value() == app.secret.get_secret_value():
            raise ConfigError(
                f"{where}: shares its secret with app {other.app_id!r} of the same corp; "
                "each WeCom agent has its own secret"
            )


def _resolve_secret(
    entry: _AppEntry, *, where: str, inline_allowed: bool, environ: Mapping[str, str]
) -> SecretStr:
    given = [n for n in ("secret_env", "secret_file", "secret") if getattr(entry, n) is not None]
    if len(given) != 1:
        raise ConfigError(f"{where}: give exactly one of secret_env, secret_file, secret")
    if entry.secret is None:
        return secret_from(
            env=entry.secret_env,
            file=entry.secret_file,
            value="secret",
            where=where,
            environ=environ,
        )
    if not inline_allowed:
        raise ConfigError(
            f"{where}: an inline secret is only for a local sandbox upstream; "
            "use secret_env or secret_file"
        )
    log.warning("%s: inline secret in the apps file; fine for the sandbox only", where)
    return checked_secret(entry.secret.get_secret_value(), value="secret", where=where)
