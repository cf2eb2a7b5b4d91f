"""A thread reading a gateway's `/v1/stream` into a list of events (tests and bench)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import httpx

from consumer_lib._client.sse import SseEvent, SseParser


@dataclass(frozen=True)
class Received:
    event: SseEvent
    at_s: float  # time.time() when its last line was read


class SseReader:
    def __init__(self, url: str, headers: dict[str, str], last_event_id: str | None = None):
        self.url = url
        self.headers = dict(headers)
        if last_event_id is not None:
            self.headers["Last-Event-ID"] = last_event_id
        self.received: list[Received] = []
        self.status: int | None = None
        self.error: str | None = None
        self.comments = 0
        self._stop = threading.Event()
        self._client = httpx.Client(timeout=httpx.Timeout(10.0, read=None))
        self._thread = threading.Thread(target=self._run, daemon=True, name="sse-reader")
        self._thread.start()

    def _run(self) -> None:
        parser = SseParser()
        try:
            with self._client.stream("GET", self.url, headers=self.headers) as response:
                self.status = response.status_code
                if response.status_code != 200:
                    response.read()
                    self.error = response.text
                    return
                for line in response.iter_lines():
                    if self._stop.is_set():
                        return  # the next line (a heartbeat at worst) ends the thread
                    if line.startswith(":"):
                        self.comments += 1
                    event = parser.feed(line.encode())
                    if event is not None:
                        self.received.append(Received(event, time.time()))
        except httpx.HTTPError as exc:
            self.error = f"{type(exc).__name__}: {exc}"

    @property
    def events(self) -> list[SseEvent]:
        return [r.event for r in list(self.received)]

    def close(self) -> None:
        """Stop at the next line read (the gateway's heartbeat bounds the wait)."""
        self._stop.set()
        self._thread.join(timeout=10)
        self._client.close()
        self._thread.join(timeout=5)
