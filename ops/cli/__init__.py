"""`wxtoken`, the operators' command line: a thin shell over the Redis store and the exchange.

Commands: set (override a token read from stdin), refresh (ask the leader for a new
token), get, status, watch, history (the audit trail), quota clear (ask the leader to call
clear_quota), platform status|reconcile (third-party platforms), apps import|add|remove|list
(apps kept in the registry), sandbox, keygen,
redis-functions (load the Redis Functions library).
Settings come from `WXTOKEN_*` variables. Bad arguments or settings exit 2, a failing
service exits 1; both print one line on stderr.
Tests inject an `OpsContext` (`ops.cli.context`) with fake clients as `obj`.

    context   OpsContext, the broker channels, the helpers the commands share
    tokens    set, refresh, get
    observe   status, watch, history
    quota     quota clear
    platform  platform status, platform reconcile (the platform registry)
    apps      apps import/add/remove/list (plain apps stored in the registry)
    registry  opening the registry for those two
    sandbox   sandbox
    keys      keygen
    gateway_keys  gateway-key add|list|remove (the gateway's API keys)
    functions redis-functions (the admin step loading the Lua of every role)
"""

from __future__ import annotations

import logging
from typing import Any

import click

from consumer_lib.errors import ConfigError, StoreError, WxTokenError

from . import apps, functions, gateway_keys, keys, observe, platform, quota, sandbox, tokens
from .context import BadConfig, CliError, OpsContext


class _Group(click.Group):
    """Turns our errors into one line on stderr: exit 2 for configuration and usage, else 1."""

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.UsageError as exc:
            raise _one_line(exc) from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            raise _one_line(exc) from None
        except ConfigError as exc:
            raise BadConfig(str(exc)) from None
        except StoreError as exc:
            raise CliError(f"Redis: {exc}") from None
        except WxTokenError as exc:
            raise CliError(str(exc)) from None


class BadUsage(click.ClickException):
    """A usage error as one line on stderr (click's own adds the usage and a blank line)."""

    exit_code = 2


def _one_line(exc: click.UsageError) -> click.ClickException:
    """`exc` as one `Error: ...` line that names the command's --help; the help an empty
    command line asks for (`NoArgsIsHelpError`) is left as it is."""
    if isinstance(exc, click.exceptions.NoArgsIsHelpError):
        return exc
    command = exc.ctx.command_path if exc.ctx is not None else "wxtoken"
    return BadUsage(f"{exc.format_message().rstrip('.')}; see '{command} --help'")


def _configure_logging(verbose: int) -> None:
    """WARNING by default, -v INFO, -vv DEBUG; left alone if the process configured it."""
    root = logging.getLogger()
    if root.handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    if verbose < 2:  # pika logs a refused connection with a traceback; we say it in one line
        handler.addFilter(lambda record: not record.name.startswith("pika."))
    root.addHandler(handler)
    root.setLevel(max(logging.DEBUG, logging.WARNING - 10 * verbose))


@click.group(cls=_Group)
@click.option("-v", "--verbose", count=True, help="Log more: -v for INFO, -vv for DEBUG.")
@click.pass_context
def main(ctx: click.Context, verbose: int) -> None:
    """Operate wxtoken: override, inspect and watch WeChat tokens; run the sandbox."""
    _configure_logging(verbose)
    if ctx.obj is None:
        ctx.obj = OpsContext()
    if not isinstance(ctx.obj, OpsContext):
        raise TypeError(f"context object must be an OpsContext, not {type(ctx.obj).__name__}")
    ctx.call_on_close(ctx.obj.close)


for _command in (
    tokens.set_token,
    tokens.refresh,
    tokens.get,
    observe.status,
    observe.watch,
    observe.history,
    quota.quota,
    platform.platform,
    apps.apps,
    sandbox.sandbox,
    keys.keygen,
    gateway_keys.gateway_key,
    functions.redis_functions,
):
    main.add_command(_command)
