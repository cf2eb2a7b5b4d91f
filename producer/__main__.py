"""`wxtoken-producer`: read settings and the apps file, then refresh until SIGTERM/SIGINT.

SIGHUP reads the apps file again and applies it without a restart (`ProducerService.reload`);
a file that does not load keeps the running set and logs one line naming the problem.
"""

from __future__ import annotations

import gc
import itertools
import logging
import signal
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING

from consumer_lib.errors import ConfigError
from consumer_lib.settings import DOTENV, load_settings
from consumer_lib.settings.usage import usage, wants_help
from producer.apps import load_apps
from producer.observability.logsetup import configure_logging
from producer.observability.wiring import metered_upstream, start_status
from producer.platform.errors import RegistryUnavailable
from producer.service import ProducerService
from producer.settings import ProducerSettings
from producer.signals import STOP_SIGNALS, SignalInbox

if TYPE_CHECKING:  # the platform extra, imported only when configured
    from producer.platform.wiring import PlatformSetup

log = logging.getLogger(__name__)


SUMMARY = """\
The wxtoken producer: fetches each app's access token (and tickets) from WeChat or WeCom
ahead of expiry, stores it in Redis and publishes it signed on the RabbitMQ fanout
exchange. Several may run: one leads (a lease in Redis), the others stand by. SIGTERM or
SIGINT stops it (releasing the lease); SIGHUP re-reads the apps file."""
NOTES = """\
It also reads a .env file in the working directory, and the variables the apps file names
(`secret_env`). See docs/operating.md, Configuration."""


def main(argv: list[str] | None = None) -> int:
    """Run the producer in the foreground; returns the process exit code."""
    argv = sys.argv[1:] if argv is None else argv
    if wants_help(argv):
        print(usage("wxtoken-producer", SUMMARY, ProducerSettings, notes=NOTES))
        return 0
    if argv:  # configuration comes from WXTOKEN_* variables only
        print(
            f"wxtoken-producer: takes no arguments (got {argv[0]!r}); see --help",
            file=sys.stderr,
        )
        return 2
    try:
        settings = load_settings(ProducerSettings, DOTENV)
        configure_logging(settings.log_level)
        apps = load_apps(
            settings.apps_file,
            wechat_base_url=settings.wechat_base_url,
            wecom_base_url=settings.wecom_base_url,
        )
        platform_setup = open_platform_registry(settings)
        meter = metered_upstream(settings)
        service = ProducerService(settings, apps, fetcher=meter, platform_setup=platform_setup)
    except ConfigError as exc:
        print(f"wxtoken-producer: configuration error: {exc}", file=sys.stderr)
        return 2
    except RegistryUnavailable as exc:
        print(f"wxtoken-producer: {exc}", file=sys.stderr)
        return 1

    log.info(
        "producer %s starting: %d app(s) [%s], upstream %s",
        settings.producer_id,
        len(apps),
        _listed(a.app_id for a in apps),
        settings.wechat_base_url,
    )
    with SignalInbox(STOP_SIGNALS | {signal.SIGHUP}) as inbox:
        service.start()
        # Thousands of credentials are a million long-lived objects: leave them out of the
        # collector's full passes (each took a few hundred ms of CPU with 30,000 credentials).
        gc.freeze()
        try:
            status = start_status(settings, service, meter)
        except ConfigError as exc:
            service.close()
            print(f"wxtoken-producer: configuration error: {exc}", file=sys.stderr)
            return 2
        try:
            while True:
                received = inbox.wait(0.2)
                stops = [sig for sig in received if sig in STOP_SIGNALS]
                if stops:
                    log.info("received %s, stopping", stops[0].name)
                    break
                if signal.SIGHUP in received:  # several at once: one reload
                    reload_apps(service, settings)
        finally:
            service.close()
            if status is not None:
                status.close()
    log.info("producer stopped")
    return 0


def open_platform_registry(settings: ProducerSettings) -> PlatformSetup | None:
    """With `WXTOKEN_PLATFORM_DB_URL` set: migrate the registry's database (or refuse one at
    an unknown schema revision) before anything else starts, and read the platforms file
    (with `WXTOKEN_PLATFORMS_FILE`); the registry's stored apps are served either way.
    SQLAlchemy is imported only then."""
    if settings.platform_db_url is None:
        if settings.platforms_file is not None:
            raise ConfigError("WXTOKEN_PLATFORMS_FILE needs WXTOKEN_PLATFORM_DB_URL (the registry)")
        return None
    try:
        from producer.platform.config import load_platforms
        from producer.platform.db.startup import open_registry
        from producer.platform.wiring import PlatformSetup
    except ImportError as exc:  # SQLAlchemy, Alembic or a driver is not installed
        raise ConfigError(
            f"WXTOKEN_PLATFORM_DB_URL needs the platform extra (wxtoken[platform]): {exc}"
        ) from None

    platforms = [] if settings.platforms_file is None else load_platforms(settings.platforms_file)
    registry = open_registry(
        settings.platform_db_url.get_secret_value(), settings.platform_key_file
    )
    # With no platforms file, the registry still serves the apps stored in it.
    return PlatformSetup(registry, platforms)


def reload_apps(service: ProducerService, settings: ProducerSettings) -> None:
    """Apply the apps file as it is now; a bad file changes nothing (one ERROR line)."""
    try:
        apps = load_apps(
            settings.apps_file,
            wechat_base_url=settings.wechat_base_url,
            wecom_base_url=settings.wecom_base_url,
        )
    except ConfigError as exc:
        log.error(
            "apps file not reloaded, still serving %d app(s) (%d credential(s)): %s",
            len(service.fleet.app_ids()),
            len(service.refreshers),
            exc,
        )
        service.retry_failing()  # SIGHUP is also the operator's "try now"
        return
    done = service.reload(apps)
    gc.freeze()  # the new credentials too (see main)
    log.info(
        "apps file reloaded: %d app(s); added %d [%s], removed %d [%s], changed %d [%s]",
        len(apps),
        len(done.added),
        _listed(done.added),
        len(done.removed),
        _listed(done.removed),
        len(done.changed),
        _listed(done.changed),
    )


def _listed(app_ids: Iterable[str], limit: int = 10) -> str:
    """At most `limit` app ids for a log line, then how many more."""
    shown = list(itertools.islice(app_ids, limit + 1))
    if len(shown) <= limit:
        return ", ".join(shown)
    return ", ".join(shown[:limit]) + ", ..."


if __name__ == "__main__":
    sys.exit(main())
