"""`wxtoken gateway-key add|list|remove`: the gateway's API keys file.

The file holds only SHA-256 hashes; `add` prints the new key once. A running gateway
re-reads the file within seconds of a change.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from ops.gateway._apikeys import Scope, add_key, load_entries, write_entries

from .context import CliError

_FILE = click.option(
    "--file",
    "keys_file",
    envvar="WXTOKEN_GATEWAY_KEYS_FILE",
    show_envvar=True,  # a missing one names the variable too
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The keys file.",
)


def _csv(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


@click.group("gateway-key")
def gateway_key() -> None:
    """Manage the API keys of wxtoken-gateway."""


@gateway_key.command("add")
@click.argument("name")
@click.option("--apps", required=True, help="Comma-separated app id patterns, e.g. 'wx*'.")
@click.option(
    "--scopes",
    default="read",
    show_default=True,
    help=f"Comma-separated, of: {', '.join(s.value for s in Scope)}.",
)
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), help="Requests per second.")
@_FILE
def add(name: str, apps: str, scopes: str, rate: float | None, keys_file: Path) -> None:
    """Add key NAME and print it, once: it is stored only hashed."""
    try:
        key = add_key(keys_file, name, apps=_csv(apps), scopes=_csv(scopes), rate_per_s=rate)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    except OSError as exc:
        raise CliError(f"cannot write {keys_file}: {exc.strerror}") from None
    click.echo(key)
    click.echo(f"added {name!r} to {keys_file}; the key above is shown only now", err=True)


@gateway_key.command("list")
@click.option("--json", "as_json", is_flag=True, help="A JSON list of objects.")
@_FILE
def list_keys(as_json: bool, keys_file: Path) -> None:
    """The keys' names, app patterns, scopes and rates (never the keys)."""
    entries = load_entries(keys_file)
    rows = [e.model_dump(mode="json", exclude={"sha256"}) for e in entries]
    if as_json:
        click.echo(json.dumps(rows))
        return
    for row in rows:
        rate = f" rate={row['rate_per_s']:g}/s" if row.get("rate_per_s") else ""
        click.echo(
            f"{row['name']}: apps={','.join(row['apps'])} scopes={','.join(row['scopes'])}{rate}"
        )


@gateway_key.command("remove")
@click.argument("name")
@_FILE
def remove(name: str, keys_file: Path) -> None:
    """Remove key NAME: the gateway refuses it within seconds."""
    entries = load_entries(keys_file)
    kept = [e for e in entries if e.name != name]
    if len(kept) == len(entries):
        raise click.UsageError(f"no key named {name!r} in {keys_file}")
    try:
        write_entries(keys_file, kept)
    except OSError as exc:
        raise CliError(f"cannot write {keys_file}: {exc.strerror}") from None
    click.echo(f"removed {name!r} from {keys_file}")
