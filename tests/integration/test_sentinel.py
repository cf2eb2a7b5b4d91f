"""Redis Sentinel: a `redis+sentinel://` client follows a failover from a killed master to
its promoted replica, for the producer's store and for a subscribing `TokenClient`.

The master, its replica and the sentinel are private `redis-server` processes on free
ports (tests/integration/servers.py); the broker is the shared local RabbitMQ, used
through an isolated exchange.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pika
import pytest

from consumer_lib import ClientSettings, StoreError, TokenClient, TokenKind, TokenUpdate
from consumer_lib.snapshot import SnapshotReader, connect_redis
from consumer_lib.wire.keys import KeyLayout
from producer.publishing import declare_exchange
from producer.store import TokenStore
from tests.integration.servers import HOST, RedisServer, SentinelServer
from tests.unit._helpers import make_update
from tests.waiting import wait_for

APP = "wxsentinel000001"
ACCESS = TokenKind.ACCESS_TOKEN


@dataclass
class Replicated:
    """A master, its replica, and one sentinel watching them as service `wxm`."""

    master: RedisServer
    replica: RedisServer
    sentinel: SentinelServer

    def promoted(self) -> bool:
        """True once the sentinel names the replica as the master."""
        return self.sentinel.master_address() == (HOST, self.replica.port)


@pytest.fixture
def replicated(tmp_path: Path) -> Iterator[Replicated]:
    """Master and replica in sync, and a sentinel that already knows the replica."""
    # Without the delay (5 s by default) a full sync starts as soon as the replica asks.
    master = RedisServer(tmp_path, extra_args=["--repl-diskless-sync-delay", "0"], name="master")
    replica = RedisServer(tmp_path, name="replica")
    sentinel: SentinelServer | None = None
    try:
        master.start()
        replica.extra_args = ["--replicaof", HOST, str(master.port)]
        replica.start()
        wait_for(replica.replica_in_sync, timeout_s=10, message="the replica to sync")
        sentinel = SentinelServer(tmp_path, master.port, service="wxm").start()
        # A sentinel can only promote a replica it has heard of (from the master's INFO).
        wait_for(
            lambda: sentinel is not None and sentinel.knows_replica(replica.port),
            timeout_s=15,
            message="the sentinel to discover the replica",
        )
        yield Replicated(master, replica, sentinel)
    finally:
        if sentinel is not None:
            sentinel.stop()
        replica.stop()
        master.stop()


def token_at(version: int) -> TokenUpdate:
    """An update of APP valid for two hours from now, its value naming its version."""
    return make_update(
        app_id=APP,
        version=version,
        value=f"SENTINEL-TOKEN-v{version}-{'s' * 20}",
        issued_at=time.time(),
    )


def read_through(store: TokenStore, failures: list[str]) -> TokenUpdate | None:
    """One read of APP; a `StoreError` (the failover under way) is noted, not raised."""
    try:
        return store.read(APP)
    except StoreError as exc:
        failures.append(str(exc))
        return None


def write_through(store: TokenStore, failures: list[str]) -> TokenUpdate | None:
    """Allocate the next version and write it; None (and a note) on a `StoreError`."""
    try:
        update = token_at(store.next_version(APP, ACCESS, now_s=time.time()))
        assert store.write(update).written
    except StoreError as exc:
        failures.append(str(exc))
        return None
    return update


def test_store_and_token_client_follow_a_sentinel_failover(
    replicated: Replicated, amqp_url: str, isolation: dict[str, str]
) -> None:
    """After the master is SIGKILLed, the same store client and a `TokenClient` (both given
    the sentinel URL) read the old token and the newer one written to the promoted replica."""
    url = replicated.sentinel.url()
    keys = KeyLayout(isolation["key_prefix"])
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        declare_exchange(connection.channel(), isolation["exchange"])
    finally:
        connection.close()

    store_client = connect_redis(url, timeout_s=0.5)
    settings = ClientSettings(
        insecure_accept_unsigned=True,  # plain updates: signing is not what is tested
        redis_url=url,
        amqp_url=amqp_url,
        redis_timeout_s=0.5,
        poll_interval_s=0.5,
        exchange=isolation["exchange"],
        key_prefix=isolation["key_prefix"],
    )
    store = TokenStore(store_client, keys)
    client = TokenClient(settings)
    try:
        first = write_through(store, [])
        assert first is not None
        # Nothing is published in this test: the client's tokens come from the snapshot.
        assert client.start().get_token(APP, timeout=10) == first.value
        # What the replica lacks when its master dies is lost: let the write reach it.
        replica = replicated.replica.client()
        try:
            wait_for(lambda: replica.get(keys.token(APP, ACCESS)), message="replication")
        finally:
            replica.close()

        replicated.master.kill()
        killed_at = time.monotonic()
        failures: list[str] = []
        promoted_after: list[float] = []

        def read_during_failover() -> TokenUpdate | None:
            if not promoted_after and replicated.promoted():
                promoted_after.append(time.monotonic() - killed_at)
            return read_through(store, failures)

        # Reads start at once: they fail until the sentinel has promoted the replica.
        held = wait_for(
            read_during_failover,
            timeout_s=30,
            interval_s=0.05,
            message="a read after the failover",
        )
        read_s = time.monotonic() - killed_at
        assert held == first
        assert promoted_after or replicated.promoted()
        promoted_s = promoted_after[0] if promoted_after else read_s

        second = wait_for(lambda: write_through(store, failures), timeout_s=30, message="write")
        assert second is not None
        assert second.version > first.version
        written_s = time.monotonic() - killed_at
        new_master = replicated.replica.client()
        try:
            assert SnapshotReader(new_master, keys).read(APP) == second
        finally:
            new_master.close()

        def client_has_second() -> bool:
            client.refresh_from_snapshot()  # through the same client's sentinel pool
            return client.get(APP, timeout=0).version == second.version

        wait_for(client_has_second, timeout_s=30, message="the TokenClient to read the snapshot")
        client_s = time.monotonic() - killed_at
        assert client.get_token(APP) == second.value
        assert client.last_store_error is None
        print(
            f"\nsentinel failover: replica promoted {promoted_s:.2f} s after the master was "
            f"killed; store read again after {read_s:.2f} s and wrote v{second.version} after "
            f"{written_s:.2f} s, with {len(failures)} StoreError(s) meanwhile, of kinds "
            f"{sorted({f.split(': ')[1] for f in failures})}; the TokenClient read "
            f"v{second.version} from the new master after {client_s:.2f} s"
        )
    finally:
        client.close()
        store_client.close()


def test_an_unknown_service_is_a_store_error(replicated: Replicated) -> None:
    """A sentinel that names no master for the service makes reads fail with `StoreError`."""
    url = replicated.sentinel.url().replace("/wxm/", "/no-such-service/")
    client = connect_redis(url, timeout_s=0.5)
    try:
        with pytest.raises(StoreError, match="MasterNotFoundError: No master found"):
            SnapshotReader(client).read(APP)
    finally:
        client.close()
