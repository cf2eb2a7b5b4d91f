"""Logging of our entry points (`wxtoken-producer`, `wxtoken-gateway`), never of a library.

Standard library only, so the gateway, which installs neither requests nor click, uses it too.
"""

from __future__ import annotations

import logging
import sys

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: str) -> None:
    """One line per record on stderr at `level`, with third-party noise turned down."""
    logging.basicConfig(level=level, format=FORMAT, stream=sys.stderr)
    # pika logs every failed reconnect at ERROR with a traceback; our services say "broker
    # unreachable" themselves, once per outage (consumer_lib.outage). DEBUG shows pika's own
    # account.
    if level != "DEBUG":
        logging.getLogger("pika").setLevel(logging.CRITICAL)
        # Alembic says at INFO which plugins and dialect it set up, at every start; the
        # registry logs the revision it brought the schema to (producer.platform.db.startup).
        logging.getLogger("alembic").setLevel(logging.WARNING)
    # urllib3 logs each request URL at DEBUG: for the classic API that holds the secret.
    logging.getLogger("urllib3").setLevel(logging.WARNING)
