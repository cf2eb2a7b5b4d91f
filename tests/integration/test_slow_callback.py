"""A slow `on_update` callback never holds the broker connection (issue 20): while one sleeps
5 s, the client's connection keeps its heartbeats (1 s here: a blocked connection thread
would be closed by the broker within a few seconds) and newer updates keep arriving in
`get_token()`; the callback then sees every version, in order."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pika
import pytest

from consumer_lib import ClientSettings, TokenClient
from consumer_lib.amqp import declare_exchange, publish_update
from consumer_lib.wire.signing import UpdateCodec, load_private_key
from consumer_lib.wire.update import TokenSource, TokenUpdate
from tests.waiting import wait_for

APP = "wxslowcallback01"
CALLBACK_SLEEP_S = 5.0


def _update(version: int, now_s: float) -> TokenUpdate:
    return TokenUpdate(
        app_id=APP,
        value=f"TOKEN-slow-callback-v{version:04d}-{'x' * 24}",
        version=version,
        issued_at=now_s,
        expires_at=now_s + 600,
        source=TokenSource.REFRESH,
        producer_id="test-producer",
    )


@pytest.fixture
def channel(amqp_url: str, isolation: dict[str, str]) -> Iterator[object]:
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()
    declare_exchange(channel, isolation["exchange"])
    yield channel
    connection.close()


def test_a_slow_callback_does_not_hold_the_broker_connection(
    redis_url: str,
    amqp_url: str,
    isolation: dict[str, str],
    signing_keys: tuple[Path, Path],
    channel: pika.adapters.blocking_connection.BlockingChannel,
) -> None:
    private_key, public_key = signing_keys
    codec = UpdateCodec(signer=load_private_key(private_key))
    settings = ClientSettings(
        redis_url=redis_url,
        amqp_url=amqp_url,
        exchange=isolation["exchange"],
        key_prefix=isolation["key_prefix"],
        verify_keys=str(public_key),
        heartbeat_s=1,
    )
    seen: list[int] = []
    sleeping = threading.Event()
    slept = threading.Event()

    def slow(update: TokenUpdate) -> None:
        if update.version == 1:
            sleeping.set()
            time.sleep(CALLBACK_SLEEP_S)  # the slow callback under test, not a wait
            slept.set()
        seen.append(update.version)

    with TokenClient(settings) as client:
        client.on_update(slow)
        assert client.wait_connected(30)

        def publish(version: int) -> None:
            publish_update(
                channel,
                isolation["exchange"],
                _update(version, time.time()),
                now_s=time.time(),
                sender="test-producer",
                codec=codec,
            )

        publish(1)
        assert sleeping.wait(20), "the callback of v1 never started"
        started = time.monotonic()
        for version in (2, 3):
            publish(version)
        wait_for(
            lambda: client.get_token(APP, timeout=0.5).endswith(f"v0003-{'x' * 24}"),
            timeout_s=CALLBACK_SLEEP_S,
            message="v3 in get_token() while the v1 callback sleeps",
        )
        arrived_after_s = time.monotonic() - started
        assert not slept.is_set(), "v3 arrived only once the slow callback had returned"
        disconnected_while_asleep = []

        def returned() -> bool:
            if not client.connected:  # sampled the whole time the callback sleeps
                disconnected_while_asleep.append(time.monotonic() - started)
            return slept.is_set()

        wait_for(returned, timeout_s=20, message="the slow callback returning")
        assert not disconnected_while_asleep, "the broker closed the connection: no heartbeats"
        assert client.connected
        wait_for(lambda: seen == [1, 2, 3], timeout_s=20, message="v1, v2, v3 in order")
    print(f"[slow callback] v3 held {arrived_after_s:.2f} s after its publish, callback asleep")
