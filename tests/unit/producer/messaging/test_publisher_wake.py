"""The publisher's thread is woken once per batch of publishes, not once per update."""

from __future__ import annotations

from typing import Any

from producer.messaging.publisher import Publisher
from tests.unit._helpers import make_update


class CountingConnection:
    """Stands in for the live broker connection: counts the thread's wake-ups."""

    def __init__(self) -> None:
        self.wakes = 0

    def call_threadsafe(self, callback: Any) -> None:
        self.wakes += 1


def test_a_burst_of_publishes_wakes_the_thread_once() -> None:
    publisher = Publisher("amqp://guest:guest@127.0.0.1:1/%2F", "wxtoken.test", sender="t")
    live = CountingConnection()
    publisher._live = live  # type: ignore[assignment]
    for n in range(100):
        publisher.publish(make_update(app_id=f"wxwake{n:010d}", value=f"TOKEN-{n:05d}"))
    assert live.wakes == 1
    batch, more = publisher._take_pending(1000)  # the thread takes the pending ones
    assert (len(batch), more) == (100, False)
    publisher.publish(make_update(app_id="wxwake9999999999", value="TOKEN-LATER"))
    assert live.wakes == 2  # a publish after that wakes it again
