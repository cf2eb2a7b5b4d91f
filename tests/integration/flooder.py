"""The attacker of issue 8 item 1: a consumer credential publishing refresh requests about
each new current token, in a loop (used by test_request_flood.py and bench/request_flood.py).

A consumer receives every token, so it knows the current one; this one reads it from the
snapshot in Redis (the same token) each round and publishes a `RefreshRequest` about it per
app, as fast as `rate_per_s` allows, from a thread of its own. With `made_up`, the apps
are not read at all: each request is about a made-up token of a name in `app_ids` (issue
18 item 4: a flood about apps nobody serves).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import pika
import redis

from consumer_lib.amqp import declare_requests_exchange, publish_request
from consumer_lib.snapshot import SnapshotReader
from consumer_lib.wire.keys import KeyLayout
from consumer_lib.wire.refresh_request import RefreshRequest


class Flooder:
    """Publishes refresh requests about every app's current token until `stop()`."""

    def __init__(
        self,
        *,
        amqp_url: str,
        redis_url: str,
        exchange: str,
        key_prefix: str,
        app_ids: Sequence[str],
        rate_per_s: float = 170.0,
        requester: str = "client:attacker",
        made_up: bool = False,
    ) -> None:
        self._amqp_url, self._exchange = amqp_url, exchange
        self._reader = SnapshotReader(redis.Redis.from_url(redis_url), KeyLayout(key_prefix))
        self._app_ids = list(app_ids)
        self._gap_s = 1.0 / rate_per_s
        self._requester = requester
        self._made_up = made_up
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="flooder", daemon=True)
        self.sent = 0
        #: Distinct tokens reported, per app (a new current token each time one is fetched).
        self.tokens: dict[str, set[str]] = {app_id: set() for app_id in self._app_ids}
        self.error: BaseException | None = None

    def start(self) -> Flooder:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        try:
            connection = pika.BlockingConnection(pika.URLParameters(self._amqp_url))
            try:
                channel = connection.channel()
                declare_requests_exchange(channel, self._exchange)
                self._loop(channel)
            finally:
                connection.close()
        except BaseException as exc:  # noqa: BLE001 - re-raised by stop()
            self.error = exc

    def _loop(self, channel: object) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            for app_id in self._app_ids:
                if self._made_up:
                    token = f"made-up-{self.sent}"
                else:
                    held = self._reader.read(app_id)
                    if held is None:
                        continue
                    token = held.value
                    self.tokens[app_id].add(token)
                now_s = time.time()
                request = RefreshRequest.for_token(
                    app_id, token, requester=self._requester, now_s=now_s
                )
                publish_request(channel, self._exchange, request, sender="attacker", now_s=now_s)
                self.sent += 1
                next_at += self._gap_s
                pause_s = next_at - time.monotonic()
                if pause_s > 0:
                    self._stop.wait(pause_s)
                else:
                    next_at = time.monotonic()
