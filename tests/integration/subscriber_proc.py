"""A subscriber service for end-to-end tests, run as its own process.

It does what a real service does: `get_token()` for each app, then a WeChat call with
it (`getcallbackip` on the sandbox). Each outcome is one JSON line on stdout:

    {"event": "ready"}
    {"event": "update", "app": ..., "version": ..., "source": ..., "t": ...}
    {"event": "call", "app": ..., "version": ..., "errcode": ..., "t": ...}
    {"event": "unavailable", "app": ..., "error": ..., "t": ...}

Usage: python -m tests.integration.subscriber_proc BASE_URL APP_ID [APP_ID ...]
(settings from the WXTOKEN_* environment).
"""

from __future__ import annotations

import faulthandler
import json
import logging
import os
import signal
import sys
import threading
import time
from typing import Any

import requests

from consumer_lib import TokenClient, TokenUnavailable, TokenUpdate

CALL_INTERVAL_S = 0.1


_EMIT_LOCK = threading.Lock()


def emit(**event: Any) -> None:
    """One whole JSON line; events come from two threads, and print() could interleave."""
    line = json.dumps({**event, "t": time.time()}) + "\n"
    with _EMIT_LOCK:
        sys.stdout.write(line)
        sys.stdout.flush()


def main(argv: list[str]) -> int:
    base_url, app_ids = argv[0], argv[1:]
    logging.basicConfig(
        level=os.environ.get("WXTOKEN_TEST_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if os.environ.get("WXTOKEN_TEST_LOG_LEVEL") != "DEBUG":
        logging.getLogger("pika").setLevel(logging.WARNING)
    faulthandler.register(signal.SIGUSR1)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    session = requests.Session()
    session.trust_env = False
    with TokenClient.from_env() as client:

        @client.on_update
        def _(update: TokenUpdate) -> None:
            emit(
                event="update", app=update.app_id, version=update.version, source=str(update.source)
            )

        client.wait_connected(30)
        emit(event="ready")
        while not stop.is_set():
            for app_id in app_ids:
                try:
                    update = client.get(app_id, timeout=2)
                except TokenUnavailable as exc:
                    emit(event="unavailable", app=app_id, error=str(exc))
                    continue
                answer = session.get(
                    f"{base_url}/cgi-bin/getcallbackip",
                    params={"access_token": update.value},
                    timeout=5,
                ).json()
                emit(
                    event="call",
                    app=app_id,
                    version=update.version,
                    errcode=answer.get("errcode", 0),
                )
            stop.wait(CALL_INTERVAL_S)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
