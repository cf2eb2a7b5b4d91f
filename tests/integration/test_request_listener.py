"""Refresh requests over the real RabbitMQ: from a TokenClient and from `wxtoken refresh`."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pika
import pytest
import redis

from consumer_lib import ClientSettings, ReportOutcome, TokenClient, TokenUnavailable
from consumer_lib.amqp import Delivery, declare_exchange, publish_update
from consumer_lib.wire.control import ControlAction, ControlRequest
from consumer_lib.wire.keys import KeyLayout
from consumer_lib.wire.refresh_request import (
    REQUEST_MESSAGE_TYPE,
    RefreshRequest,
    fingerprint,
    requests_exchange,
)
from consumer_lib.wire.signing import UpdateCodec, key_id, load_private_key
from producer.messaging.request_listener import RequestListener
from producer.store.tokens import TokenStore
from tests.unit._helpers import make_update
from tests.waiting import wait_for

from .tcp_proxy import proxy_to

APP = "wxreq0000000001"
TOKEN = "REQUEST_test_token_0123456789abcdefghijklmnopqrstuvwxyz"
SCRIPT = Path(sys.executable).with_name("wxtoken")
COMMAND = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "ops.cli"]


class Received:
    """The requests a listener handed over, collected thread-safely."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: list[RefreshRequest] = []

    def __call__(self, request: RefreshRequest) -> None:
        with self._lock:
            self._requests.append(request)

    @property
    def requests(self) -> list[RefreshRequest]:
        with self._lock:
            return list(self._requests)


@pytest.fixture
def exchange(amqp_url: str, isolation: dict[str, str]) -> Iterator[str]:
    """The test's token exchange, declared; its requests exchange is deleted afterwards."""
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        declare_exchange(connection.channel(), isolation["exchange"])
    finally:
        connection.close()
    yield isolation["exchange"]
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        connection.channel().exchange_delete(requests_exchange(isolation["exchange"]))
    finally:
        connection.close()


@pytest.fixture
def client(
    redis_url: str, amqp_url: str, isolation: dict[str, str], exchange: str
) -> Iterator[TokenClient]:
    settings = ClientSettings(
        insecure_accept_unsigned=True,  # plain updates: signing is not what is tested
        redis_url=redis_url,
        amqp_url=amqp_url,
        exchange=exchange,
        key_prefix=isolation["key_prefix"],
        reconnect_max_s=0.5,
    )
    with TokenClient(settings) as token_client:
        assert token_client.wait_connected(10), "client never subscribed"
        yield token_client


def start_listener(amqp_url: str, exchange: str, received: Received) -> RequestListener:
    listener = RequestListener(
        amqp_url,
        exchange,
        on_request=received,
        connection_name="wxtoken-test/request-listener",
        reconnect_max_s=0.5,
    ).start()
    assert listener.wait_connected(10), f"listener never connected: {listener.last_error}"
    return listener


@pytest.fixture
def received() -> Received:
    return Received()


@pytest.fixture
def listener(amqp_url: str, exchange: str, received: Received) -> Iterator[RequestListener]:
    listener = start_listener(amqp_url, exchange, received)
    yield listener
    listener.close()


def client_request(reason: str = "errcode 40001") -> RefreshRequest:
    return RefreshRequest.for_token(
        APP,
        TOKEN,
        requester=f"client:test-{os.getpid()}",
        now_s=time.time(),
        reported_version=3,
        reason=reason,
    )


def publish_raw(amqp_url: str, exchange: str, body: bytes) -> None:
    """Publish `body` as is on the requests exchange of `exchange`, confirmed."""
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.basic_publish(exchange=requests_exchange(exchange), routing_key="", body=body)
    finally:
        connection.close()


def test_listener_receives_a_request_sent_through_a_client(
    client: TokenClient, listener: RequestListener, received: Received, exchange: str
) -> None:
    """A request sent with `Subscriber.send` from a running TokenClient reaches the listener."""
    request = client_request()
    assert client._subscriber.send(
        requests_exchange(exchange), request.encode(), REQUEST_MESSAGE_TYPE
    )
    wait_for(lambda: received.requests, timeout_s=10, message="the client's request")
    assert received.requests == [request]
    assert (listener.stats.received, listener.stats.rejected) == (1, 0)


def test_listener_hands_wxtoken_refresh_to_the_control_hook(
    amqp_url: str,
    exchange: str,
    received: Received,
    redis_url: str,
    isolation: dict[str, str],
    service_env: dict[str, str],
    signing_keys: tuple[Path, Path],
) -> None:
    """`wxtoken refresh` sends a control request signed by the operator, with the stored
    version and never the token; the listener hands it to the control hook (the leader's
    `ControlHandler`). Nobody answers here: the CLI says so and exits 1."""
    controls: list[Delivery] = []
    listener = RequestListener(
        amqp_url,
        exchange,
        on_request=received,
        on_control=controls.append,
        connection_name="wxtoken-test/request-listener",
        reconnect_max_s=0.5,
    ).start()
    try:
        assert listener.wait_connected(10), f"listener never connected: {listener.last_error}"
        redis_client = redis.Redis.from_url(redis_url)
        codec = UpdateCodec(signer=load_private_key(signing_keys[0]))
        try:
            stored = make_update(app_id=APP, value=TOKEN, version=41, issued_at=time.time())
            store = TokenStore(redis_client, KeyLayout(isolation["key_prefix"]), codec)
            assert store.write(stored).written
        finally:
            redis_client.close()
        done = subprocess.run(
            [*COMMAND, "refresh", APP, "--reason", "integration", "--timeout", "1"],
            env={**os.environ, **service_env},
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert done.returncode == 1, done.stderr
        assert "no answer in 1 s" in done.stderr
        assert TOKEN not in done.stdout + done.stderr
        [delivery] = wait_for(lambda: controls, timeout_s=10, message="the CLI's request")
    finally:
        listener.close()
    public = load_private_key(signing_keys[0]).public_key()
    request, _ = ControlRequest.open(delivery.body, {key_id(public): public})
    assert request.action is ControlAction.REFRESH
    assert request.seen_version == 41
    assert request.operator.startswith("ops:")
    assert request.reason == "integration"
    assert TOKEN.encode() not in delivery.body
    assert received.requests == []


def test_garbage_is_rejected_and_the_listener_carries_on(
    amqp_url: str, exchange: str, listener: RequestListener, received: Received
) -> None:
    """Bodies that are not requests are counted as rejected; a valid one still gets through."""
    for body in (b"not json", b"{}", b"\xff" * 10, client_request().encode()[:-2]):
        publish_raw(amqp_url, exchange, body)
    wait_for(lambda: listener.stats.rejected == 4, timeout_s=10, message="4 rejections")
    request = client_request("after the garbage")
    publish_raw(amqp_url, exchange, request.encode())
    wait_for(lambda: received.requests, timeout_s=10, message="the valid request")
    assert received.requests == [request]
    assert listener.connected
    assert (listener.stats.received, listener.stats.rejected) == (5, 4)


def test_a_failing_handler_does_not_stop_the_listener(amqp_url: str, exchange: str) -> None:
    """A handler that raises is counted, and the next request is handled all the same."""
    calls: list[RefreshRequest] = []

    def flaky(request: RefreshRequest) -> None:
        calls.append(request)
        if len(calls) == 1:
            raise RuntimeError("handler bug")

    listener = RequestListener(
        amqp_url, exchange, on_request=flaky, connection_name="wxtoken-test/flaky"
    ).start()
    try:
        assert listener.wait_connected(10)
        publish_raw(amqp_url, exchange, client_request("first").encode())
        publish_raw(amqp_url, exchange, client_request("second").encode())
        wait_for(lambda: len(calls) == 2, timeout_s=10, message="both requests handled")
        assert listener.stats.handler_errors == 1
        assert listener.connected
    finally:
        listener.close()


def test_sending_to_a_missing_requests_exchange_leaves_the_client_subscribed(
    amqp_url: str, exchange: str, client: TokenClient, received: Received
) -> None:
    """A send the broker refuses (no requests exchange yet) never disturbs consuming."""
    reads_before = client.stats.snapshot_reads  # one per (re)connect
    target = requests_exchange(exchange)
    assert client._subscriber.send(target, client_request().encode(), REQUEST_MESSAGE_TYPE)
    listener = start_listener(amqp_url, exchange, received)  # declares the requests exchange
    try:

        def sent_and_received() -> list[RefreshRequest]:
            client._subscriber.send(target, client_request("retry").encode(), REQUEST_MESSAGE_TYPE)
            return received.requests

        wait_for(sent_and_received, timeout_s=10, interval_s=0.2, message="a later send")
    finally:
        listener.close()
    update = make_update(app_id=APP, value=TOKEN, version=7, issued_at=time.time())
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        publish_update(channel, exchange, update, now_s=time.time(), sender="test")
    finally:
        connection.close()

    def token() -> str | None:
        try:
            return client.get_token(APP, timeout=0.05)
        except TokenUnavailable:
            return None

    assert wait_for(token, timeout_s=10, message="the update at the client") == TOKEN
    assert client.connected
    assert client.stats.snapshot_reads == reads_before, "the client reconnected"


def test_a_report_before_the_first_connection_waits_for_it(
    redis_url: str,
    amqp_url: str,
    isolation: dict[str, str],
    exchange: str,
    listener: RequestListener,
    received: Received,
) -> None:
    """`report_invalid()` right after `start()`, while the broker cannot be reached yet (a
    cut proxy), is queued, not dropped: it reaches the leader once the client connects."""
    broker = urlsplit(amqp_url)
    with proxy_to(broker.hostname or "127.0.0.1", broker.port or 5672) as proxy:
        proxy.cut()
        via_proxy = amqp_url.replace(f":{broker.port}/", f":{proxy.port}/", 1)
        settings = ClientSettings(
            insecure_accept_unsigned=True,
            redis_url=redis_url,
            amqp_url=via_proxy,
            exchange=exchange,
            key_prefix=isolation["key_prefix"],
            reconnect_max_s=0.5,
        )
        with TokenClient(settings) as token_client:
            outcome = token_client.report_invalid_outcome(APP, TOKEN, reason="right away")
            assert outcome is ReportOutcome.QUEUED
            assert received.requests == []
            proxy.restore()
            [request] = wait_for(
                lambda: received.requests, timeout_s=15, message="the queued report"
            )
            assert request.token_sha256 == fingerprint(TOKEN)
            assert request.reason == "right away"
            # Connected now: a report of another token goes straight out.
            assert token_client.report_invalid_outcome(APP, TOKEN + "x") is ReportOutcome.SENT
