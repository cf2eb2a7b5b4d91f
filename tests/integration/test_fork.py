"""A `TokenClient` started before `os.fork()` (gunicorn `--preload`) works in every child:
each child subscribes on its own connection and thread, and the parent is undisturbed.

The children do as little as possible and never touch pytest: each reports JSON lines on a
pipe and always ends with `os._exit()`, so no test machinery runs twice.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import select
import signal
import threading
import time
import weakref
from collections.abc import Iterator
from typing import Any

import pika
import pytest
import redis
from pika.adapters.blocking_connection import BlockingChannel

from consumer_lib import ClientSettings, TokenClient, TokenKind, TokenUpdate
from consumer_lib.amqp import declare_exchange, publish_update
from consumer_lib.wire.keys import KeyLayout
from producer.store.tokens import TokenStore
from tests.unit._helpers import make_update
from tests.waiting import wait_for

APP = "wxforked00000001"
CHILDREN = 2


def token_at(version: int) -> TokenUpdate:
    """An update of APP valid for two hours from now, its value naming its version."""
    return make_update(
        app_id=APP,
        version=version,
        value=f"FORK-TOKEN-v{version}-{'f' * 20}",
        issued_at=time.time(),
    )


class Child:
    """A forked child and the read end of the pipe it reports on."""

    def __init__(self, pid: int, read_fd: int) -> None:
        self.pid = pid
        self.read_fd = read_fd
        self.exit_code: int | None = None
        self._buffer = b""

    def report(self, timeout_s: float) -> dict[str, Any]:
        """The next JSON line the child writes; fails after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self._buffer:
            remaining_s = deadline - time.monotonic()
            if remaining_s <= 0:
                raise AssertionError(f"child {self.pid} reported nothing in {timeout_s} s")
            readable, _, _ = select.select([self.read_fd], [], [], remaining_s)
            if readable:
                chunk = os.read(self.read_fd, 65536)
                if not chunk:
                    raise AssertionError(f"child {self.pid} closed its pipe: {self._buffer!r}")
                self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        report: dict[str, Any] = json.loads(line)
        return report

    def reap(self, timeout_s: float) -> int:
        """Wait for the child's exit code; SIGKILL it after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while self.exit_code is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.exit_code = os.waitstatus_to_exitcode(status)
            elif time.monotonic() > deadline:
                self.kill()
            else:
                select.select([], [], [], 0.02)  # a short pause between polls of waitpid
        return self.exit_code

    def kill(self) -> None:
        if self.exit_code is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            _, status = os.waitpid(self.pid, 0)
            self.exit_code = os.waitstatus_to_exitcode(status)


def child_main(client: TokenClient, first: TokenUpdate, write_fd: int) -> int:
    """What a child does with the client it inherited: report, wait for the next token."""

    def say(**fields: Any) -> None:
        os.write(write_fd, json.dumps({"pid": os.getpid(), **fields}).encode() + b"\n")

    arrived = threading.Event()
    client.on_update(lambda update: arrived.set())
    held_at_fork = client.get_token(APP, timeout=0)
    connected = client.wait_connected(15)
    client.refresh_from_snapshot()  # through this child's own Redis connections
    say(
        stage="ready",
        held_at_fork=held_at_fork == first.value,
        connected=connected,
        redis_ok=client.last_store_error is None,
        subscriber_threads=sum(
            1 for t in threading.enumerate() if t.name == "wxtoken-subscriber" and t.is_alive()
        ),
    )
    arrived.wait(20)
    update = client.get(APP, timeout=0)
    say(stage="done", version=update.version, value=update.value)
    return 0


def fork_child(client: TokenClient, first: TokenUpdate) -> Child:
    """Fork; the child runs `child_main` and always leaves through `os._exit`."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no pytest from here on
        code = 3
        try:
            os.close(read_fd)
            code = child_main(client, first, write_fd)
        except BaseException as exc:  # noqa: BLE001 - reported on the pipe, never raised
            with contextlib.suppress(BaseException):
                message = {"pid": os.getpid(), "stage": "error", "error": repr(exc)}
                os.write(write_fd, json.dumps(message).encode() + b"\n")
            code = 2
        finally:
            with contextlib.suppress(BaseException):
                client.close()
            os._exit(code)
    os.close(write_fd)
    return Child(pid, read_fd)


@pytest.fixture
def broker(amqp_url: str, isolation: dict[str, str]) -> Iterator[BlockingChannel]:
    """A confirming channel straight to the broker, with the test's exchange declared."""
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        declare_exchange(channel, isolation["exchange"])
        yield channel
    finally:
        connection.close()


def test_a_client_started_before_fork_works_in_every_child(
    broker: BlockingChannel,
    redis_url: str,
    amqp_url: str,
    isolation: dict[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Two children each hold the inherited token, subscribe on their own and receive a
    token published after the fork; the parent receives it too, on its original connection."""
    caplog.set_level(logging.INFO, logger="consumer_lib._client.subscriber")
    exchange = isolation["exchange"]
    writer = redis.Redis.from_url(redis_url)
    store = TokenStore(writer, KeyLayout(isolation["key_prefix"]))
    first = token_at(store.next_version(APP, TokenKind.ACCESS_TOKEN, now_s=time.time()))
    assert store.write(first).written
    publish_update(broker, exchange, first, now_s=time.time(), sender="test")
    settings = ClientSettings(
        insecure_accept_unsigned=True,  # plain updates: signing is not what is tested
        redis_url=redis_url,
        amqp_url=amqp_url,
        exchange=exchange,
        key_prefix=isolation["key_prefix"],
    )
    client = TokenClient(settings).start()
    children: list[Child] = []
    try:
        assert client.wait_connected(10)
        assert client.get_token(APP, timeout=10) == first.value
        for _ in range(CHILDREN):
            children.append(fork_child(client, first))
        readies = [child.report(timeout_s=30) for child in children]
        for ready in readies:
            assert ready == {
                "pid": ready["pid"],
                "stage": "ready",
                "held_at_fork": True,
                "connected": True,
                "redis_ok": True,
                "subscriber_threads": 1,
            }

        # Published only, not stored: it can reach the children through their own queues only.
        second = token_at(first.version + 1)
        publish_update(broker, exchange, second, now_s=time.time(), sender="test")
        for child in children:
            done = child.report(timeout_s=30)
            assert done == {
                "pid": child.pid,
                "stage": "done",
                "version": second.version,
                "value": second.value,
            }
        for child in children:
            assert child.reap(timeout_s=15) == 0
        wait_for(
            lambda: client.get(APP, timeout=0).version == second.version,
            message="the parent to receive the token published after the fork",
        )

        # The children are gone and closed their clients: the parent's connection lives on.
        third = token_at(second.version + 1)
        publish_update(broker, exchange, third, now_s=time.time(), sender="test")
        wait_for(
            lambda: client.get(APP, timeout=0).version == third.version,
            message="the parent to receive a token after the children exited",
        )
        assert client.connected
        subscribed = [r for r in caplog.records if r.getMessage().startswith("subscribed to")]
        assert len(subscribed) == 1, "the parent reconnected: a child disturbed its connection"
    finally:
        for child in children:
            child.kill()
            os.close(child.read_fd)
        client.close()
        writer.close()


def test_the_fork_hook_keeps_no_client_alive() -> None:
    """The at-fork hook holds its client weakly: a dropped client is collected."""
    settings = ClientSettings(
        insecure_accept_unsigned=True, amqp_url="amqp://guest:guest@127.0.0.1:1/%2F"
    )
    client = TokenClient(settings, redis_client=redis.Redis(port=1))
    ref = weakref.ref(client)
    client.close()
    del client
    gc.collect()
    assert ref() is None
