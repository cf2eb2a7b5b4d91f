"""What a subscriber does with updates it must not use: older, expired."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from consumer_lib import TokenClient
from consumer_lib.testing import StubTransport
from tests.conftest import FakeClock
from tests.unit._helpers import make_update
from tests.unit.consumer_lib.test_trusted_publishers import client_trusting


@pytest.fixture
def stub() -> StubTransport:
    return StubTransport()


@pytest.fixture
def client(clock: FakeClock, stub: StubTransport) -> Iterator[TokenClient]:
    made = client_trusting("", clock, stub)
    yield made
    made.close()


def test_older_and_expired_messages_are_dropped_counted_and_logged(
    client: TokenClient, clock: FakeClock, caplog: pytest.LogCaptureFixture, stub: StubTransport
) -> None:
    """An older version and an already expired update are dropped and counted, with one
    line each (no token), while a re-publish of the held version stays quiet."""
    held = make_update(version=5)
    stub.push_raw(held.encode(), user_id="wxtoken-producer")
    stub.push_raw(held.encode(), user_id="wxtoken-producer")  # the periodic re-publish
    assert "older" not in caplog.text
    stub.push_raw(
        make_update(version=4, value="TOKEN-older-0004").encode(), user_id="wxtoken-producer"
    )
    dead = make_update(version=6, value="TOKEN-dead-0006", issued_at=clock() - 7300)
    stub.push_raw(dead.encode(), user_id="wxtoken-producer")
    assert client.get_token("wxapp1", timeout=0) == held.value
    assert client.stats.stale == 2
    assert client.stats.expired == 1
    assert "older than the held v5" in caplog.text
    assert "dropped expired" in caplog.text
    assert "TOKEN-older-0004" not in caplog.text
