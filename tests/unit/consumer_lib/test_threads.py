"""Which thread does what: callbacks stay off the caller's thread, counters and the lease's
state stay right when several threads touch them at once."""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict

import fakeredis
import pytest

from consumer_lib import ClientSettings, ClientStats, TokenClient, TokenUpdate
from consumer_lib.testing import StubTransport, stub_client
from consumer_lib.wire.keys import KeyLayout
from producer.apps import TokenApi
from producer.leadership.lease import Leadership
from producer.store.tokens import TokenStore
from tests.conftest import FakeClock
from tests.unit._helpers import make_update
from tests.waiting import wait_for

#: The clock fields of `stats_dict()`: no message here carries a send time.
CLOCK_STATS = {"clock_offset_ms": 0, "invalid_sent_headers": 0}

APPS = [f"wxthread{i:03d}" for i in range(40)]


@pytest.fixture
def busy_switching() -> Iterator[None]:
    """Let threads switch as often as CPython allows, so races show up."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(before)


@pytest.fixture
def fake_redis() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


@pytest.fixture
def stubbed(
    clock: FakeClock, fake_redis: fakeredis.FakeRedis
) -> Iterator[tuple[TokenClient, StubTransport]]:
    """A client fed by a stub transport: a test's thread delivers messages as the
    subscriber thread does, through the same `on_body` the subscriber is attached to."""
    made, stub = stub_client(
        ClientSettings(insecure_accept_unsigned=True), redis_client=fake_redis, clock=clock
    )
    yield made, stub
    made.close()


@pytest.fixture
def client(stubbed: tuple[TokenClient, StubTransport]) -> TokenClient:
    return stubbed[0]


@pytest.fixture
def stub(stubbed: tuple[TokenClient, StubTransport]) -> StubTransport:
    return stubbed[1]


def update(app_id: str, version: int) -> TokenUpdate:
    return make_update(app_id=app_id, version=version, value=f"TOKEN-{app_id}-v{version:04d}")


def test_callbacks_never_run_on_the_callers_thread_and_arrive_in_order(
    client: TokenClient, fake_redis: fakeredis.FakeRedis, stub: StubTransport
) -> None:
    """Cold `get()`s read Redis on the caller's thread while another thread pushes newer
    versions of the same apps (as the subscriber thread does); every callback runs on the
    callback thread, never the caller's nor the pusher's, and each app's versions arrive
    rising."""
    store = TokenStore(fake_redis, KeyLayout())
    calls: list[tuple[int, str, int]] = []
    client.on_update(lambda got: calls.append((threading.get_ident(), got.app_id, got.version)))
    for app_id in APPS:
        store.write(update(app_id, 1))
    # The first app alone: its v1 can only come from the caller's own Redis read.
    assert client.get(APPS[0], timeout=10).version == 1
    reading = {app_id: threading.Event() for app_id in APPS[1:]}

    def push_newer_versions() -> None:
        for app_id in APPS[1:]:
            reading[app_id].wait(10)  # race the caller's read of this very app
            for version in (2, 3):
                stub.push_raw(update(app_id, version).encode())

    pusher = threading.Thread(target=push_newer_versions, daemon=True)
    pusher.start()
    for app_id in APPS[1:]:
        reading[app_id].set()
        assert client.get(app_id, timeout=10).version >= 1
    pusher.join(20)
    assert not pusher.is_alive()
    wait_for(
        lambda: {app for _, app, v in calls if v == 3} == set(APPS[1:]),
        message="every pushed app's v3 callback",
    )
    caller = threading.get_ident()
    assert (caller, APPS[0], 1) not in calls
    assert pusher.ident is not None
    assert pusher.ident not in {thread for thread, _, _ in calls}, "a callback on the pusher"
    assert (APPS[0], 1) in {(app, v) for _, app, v in calls}
    assert all(ident != caller for ident, _, _ in calls)
    for app_id in APPS:
        versions = [v for _, app, v in calls if app == app_id]
        assert versions == sorted(set(versions)), (app_id, versions)
    first_from_redis = sum(1 for _, app, v in calls if v == 1)
    print(f"{first_from_redis} of {len(APPS)} apps first came from the caller's Redis read")


def test_a_callback_may_close_the_client(client: TokenClient, stub: StubTransport) -> None:
    """`close()` from inside a callback returns instead of waiting for its own thread."""
    closed = threading.Event()

    def close_it(got: TokenUpdate) -> None:
        client.close()
        closed.set()

    client.on_update(close_it)
    stub.push_raw(update(APPS[0], 1).encode())
    assert closed.wait(10)


class YieldingStats(ClientStats):
    """Counters whose every store first lets other threads run: a read-add-store done
    without a lock then loses counts, as it would on a free-threaded interpreter."""

    def __setattr__(self, name: str, value: object) -> None:
        time.sleep(0)
        super().__setattr__(name, value)


def test_stats_count_every_message_fed_from_many_threads(
    client: TokenClient, busy_switching: None, stub: StubTransport
) -> None:
    """Eight threads feeding at once lose no count."""
    client.stats = YieldingStats()
    stub.push_raw(update(APPS[0], 1).encode())
    body = update(APPS[0], 1).encode()  # a re-publish of the held version: counted as stale
    threads_n, each_n = 8, 200
    start = threading.Barrier(threads_n)

    def feed() -> None:
        start.wait(10)
        for _ in range(each_n):
            stub.push_raw(body)

    threads = [threading.Thread(target=feed, daemon=True) for _ in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert client.stats_dict() == {
        **asdict(ClientStats()),
        "accepted": 1,
        "stale": 1600,
        "verified": 1,  # the copies of the held bytes are not checked again
        **CLOCK_STATS,
    }


def test_leadership_steps_down_once_when_many_writes_are_fenced(
    clock: FakeClock, busy_switching: None, caplog: pytest.LogCaptureFixture
) -> None:
    """Refresher threads told "fenced" at once: one step-down, told and logged once."""
    keys = KeyLayout("thread-test")
    changes: list[bool] = []
    leadership = Leadership(
        fakeredis.FakeRedis(),
        lease_key=keys.leader,
        epoch_key=keys.leader_epoch,
        owner="a",
        on_change=changes.append,
        monotonic=clock,
        rand=lambda: 0.5,
    )
    leadership.tick()
    assert leadership.is_leader
    caplog.set_level(logging.WARNING, logger="producer.leadership.lease")
    threads_n = 8
    start = threading.Barrier(threads_n)

    def fence() -> None:
        start.wait(10)
        leadership.fenced()

    threads = [threading.Thread(target=fence, daemon=True) for _ in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert changes == [True, False]
    assert not leadership.is_leader
    assert not leadership.may_fetch(TokenApi.STABLE)
    assert sum("no longer the leader" in r.getMessage() for r in caplog.records) == 1
