"""A subscriber that reports its token rejected when told to, for the passive-refresh test.

    python -m tests.integration.reporter_proc APP_ID REPORTS

Prints JSON lines: {"event": "ready", "version": V}, then, after a line "go" on standard
input, fires REPORTS `report_invalid()` calls from as many threads and prints
{"event": "reported", "sent": N}; every newer token prints {"event": "update", ...}.
"""

from __future__ import annotations

import faulthandler
import json
import logging
import signal
import sys
import threading
import time
from typing import Any

from consumer_lib import TokenClient, TokenUpdate

_EMIT_LOCK = threading.Lock()


def emit(**event: Any) -> None:
    """One whole JSON line; events come from two threads, and print() could interleave."""
    line = json.dumps({**event, "t": time.time()}) + "\n"
    with _EMIT_LOCK:
        sys.stdout.write(line)
        sys.stdout.flush()


def main(argv: list[str]) -> int:
    app_id, reports = argv[0], int(argv[1])
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("pika").setLevel(logging.WARNING)
    faulthandler.register(signal.SIGUSR1)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with TokenClient.from_env() as client:

        @client.on_update
        def _(update: TokenUpdate) -> None:
            emit(event="update", version=update.version)

        client.wait_connected(30)
        held = client.get(app_id, timeout=30)
        emit(event="ready", version=held.version)
        if sys.stdin.readline().strip() != "go":
            return 1
        results: list[bool] = []
        threads = [
            threading.Thread(
                target=lambda: results.append(client.report_invalid(app_id, held.value))
            )
            for _ in range(reports)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        emit(event="reported", sent=sum(results))
        threading.Event().wait()  # until SIGTERM
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
