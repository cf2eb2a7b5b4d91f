"""`wxtoken sandbox`: the local stand-in for WeChat, in the foreground."""

from __future__ import annotations

import click

from producer.signals import STOP_SIGNALS, SignalInbox

from .context import CliError, emit

DEFAULT_SANDBOX_APPS = "wxdemo0000000001:demo-secret-1,wxdemo0000000002:demo-secret-2"


@click.command()
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    envvar="WXTOKEN_SANDBOX_HOST",
    show_envvar=True,
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8080,
    show_default=True,
    envvar="WXTOKEN_SANDBOX_PORT",
    show_envvar=True,
    help="0 picks a free port.",
)
@click.option(
    "--apps",
    "apps_spec",
    default=DEFAULT_SANDBOX_APPS,
    envvar="WXTOKEN_SANDBOX_APPS",
    show_envvar=True,
    metavar="APPID:SECRET,...",
    help="Apps the sandbox knows (local fake secrets).",
)
@click.option(
    "--wecom",
    "wecom_spec",
    default="",
    envvar="WXTOKEN_SANDBOX_WECOM",
    show_envvar=True,
    metavar="CORPID:AGENTID:SECRET,...",
    help="WeCom agents the sandbox knows, each with its own secret (none by default).",
)
@click.option(
    "--platforms",
    "platforms_spec",
    default="",
    envvar="WXTOKEN_SANDBOX_PLATFORMS",
    metavar="APPID:SECRET:TOKEN:AESKEY[@URL],...",
    help="Third-party platforms the sandbox plays the open platform for; with @URL it pushes "
    "encrypted verify tickets there (none by default).",
)
@click.option(
    "--push-interval",
    type=click.FloatRange(min=0.1),
    default=600.0,
    show_default=True,
    help="Seconds between verify-ticket pushes (WeChat: 600).",
)
@click.option(
    "--expires-in",
    type=click.IntRange(min=1),
    default=7200,
    show_default=True,
    help="Lifetime of the tokens it hands out, in seconds.",
)
@click.option(
    "--overlap",
    type=click.FloatRange(min=0),
    default=300.0,
    show_default=True,
    help="Seconds a superseded token stays valid.",
)
def sandbox(
    *,
    host: str,
    port: int,
    apps_spec: str,
    wecom_spec: str,
    platforms_spec: str,
    push_interval: float,
    expires_in: int,
    overlap: float,
) -> None:
    """Run the WeChat (and WeCom) sandbox in the foreground.

    Prints one line with its URL, then serves until SIGTERM or Ctrl-C.
    """
    from ..sandbox import SandboxConfig, SandboxServer, parse_apps, parse_platforms, parse_wecom

    try:
        apps = parse_apps(apps_spec)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--apps'") from None
    try:
        agents = parse_wecom(wecom_spec)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--wecom'") from None
    try:
        platforms = parse_platforms(platforms_spec)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--platforms'") from None
    config = SandboxConfig(
        apps=apps,
        expires_in_s=expires_in,
        overlap_s=overlap,
        host=host,
        port=port,
        wecom_agents=agents,
        platforms=platforms,
        push_interval_s=push_interval,
    )
    try:
        server = SandboxServer(config)
    except OSError as exc:
        raise CliError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    with SignalInbox(STOP_SIGNALS) as inbox:
        try:
            server.start()
            emit(f"sandbox listening on {server.base_url}")
            while not inbox.wait(3600):
                pass
        finally:
            server.stop()
    emit("sandbox stopped", err=True)
