"""Redis Sentinel: a `redis+sentinel://` client follows a failover from a killed master to
its promoted replica, for the producer's store and for a subscribing `TokenClient`.

The master, its replica and the sentinel are private `redis-server` processes on free
ports (tests/integration/servers.py); the broker is the shared local RabbitMQ, used
through an isolated exchange.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pika
import pytest

from consumer_lib import ClientSettings, StoreError, TokenClient, TokenKind, TokenUpdate
from consumer_lib.amqp import declare_exchange
from consumer_lib.snapshot import SnapshotReader, connect_redis
from consumer_lib.wire.keys import KeyLayout
from producer.leadership.lease import Leadership
from producer.store.tokens import TokenStore
from tests.integration.servers import HOST, RedisServer, SentinelServer
from tests.integration.tcp_proxy import TcpProxy, proxy_to
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


@pytest.fixture
def replicated_via_proxy(tmp_path: Path) -> Iterator[tuple[Replicated, TcpProxy]]:
    """Like `replicated`, but the replica reaches its master through a proxy the test can
    cut: the master then has a replica it cannot reach."""
    master = RedisServer(tmp_path, extra_args=["--repl-diskless-sync-delay", "0"], name="master")
    replica = RedisServer(tmp_path, name="replica")
    sentinel: SentinelServer | None = None
    master.start()
    try:
        with proxy_to(HOST, master.port) as proxy:
            replica.extra_args = ["--replicaof", HOST, str(proxy.port)]
            replica.start()
            wait_for(replica.replica_in_sync, timeout_s=10, message="the replica to sync")
            sentinel = SentinelServer(tmp_path, master.port, service="wxm").start()
            wait_for(
                lambda: sentinel is not None and sentinel.knows_replica(replica.port),
                timeout_s=15,
                message="the sentinel to discover the replica",
            )
            yield Replicated(master, replica, sentinel), proxy
    finally:
        if sentinel is not None:
            sentinel.stop()
        replica.stop()
        master.stop()


def _replica_acks(master: RedisServer) -> None:
    """Wait until the master's replica acknowledges writes (WAIT 1): a replica that has just
    finished its sync is not counted for a moment."""
    client = master.client()

    def acked() -> bool:
        pipe = client.pipeline(transaction=False)
        pipe.set("wxtest:replica-probe", "1")
        pipe.execute_command("WAIT", 1, 100)
        return int(pipe.execute()[1]) >= 1

    try:
        wait_for(acked, timeout_s=10, message="the replica to acknowledge writes")
    finally:
        client.close()


def _leaders(url: str, keys: KeyLayout, ttl_s: float) -> tuple[Leadership, Leadership]:
    def one(owner: str) -> Leadership:
        return Leadership(
            connect_redis(url, timeout_s=0.5),
            lease_key=keys.leader,
            epoch_key=keys.leader_epoch,
            owner=owner,
            ttl_s=ttl_s,
        )

    return one("producer-a"), one("producer-b")


def _run_until(
    a: Leadership, b: Leadership, until: Callable[[], bool], *, timeout_s: float
) -> tuple[int, int, int]:
    """Tick both producers in turn until `until()`; count the instants at which each, and
    both at once, would fetch a classic token (`is_leader`)."""
    deadline = time.monotonic() + timeout_s
    a_leads = b_leads = both = 0
    while not until():
        assert time.monotonic() < deadline, (
            f"timed out: A leads {a.is_leader}, B leads {b.is_leader}, holder {b.holder}"
        )
        a.tick()
        b.tick()
        a_leads += a.is_leader
        b_leads += b.is_leader
        both += a.is_leader and b.is_leader
        time.sleep(0.05)  # pacing of the two loops, not a wait for a condition
    return a_leads, b_leads, both


def test_a_lease_no_replica_confirmed_is_not_a_lease(
    replicated_via_proxy: tuple[Replicated, TcpProxy], isolation: dict[str, str]
) -> None:
    """The replica lags (its link stalls) when A takes the lease; the master is SIGKILLed
    right after. A's grant was never confirmed (WAIT 1), so A did not fetch on it; the lease
    is then taken anew on the promoted replica: at most one producer fetches at any time."""
    replicated, proxy = replicated_via_proxy
    keys = KeyLayout(isolation["key_prefix"])
    # A lease longer than the failover takes: a lost grant would still be trusted.
    a, b = _leaders(replicated.sentinel.url(), keys, ttl_s=10.0)
    _replica_acks(replicated.master)
    proxy.pause()  # replication stalls: the master still lists its replica, which hears nothing
    a.tick()
    master = replicated.master.client()
    try:
        assert master.get(keys.leader) == b"1|producer-a", "the master granted the lease"
    finally:
        master.close()
    assert not a.is_leader, "a grant no replica confirmed must not count"
    assert a.lease_left_s() == 0.0
    replicated.master.kill()
    proxy.cut()  # what the replica had not received is lost with the master
    proxy.restore()
    killed_at = time.monotonic()
    a_leads, b_leads, both = _run_until(
        a, b, lambda: (a.is_leader or b.is_leader) and replicated.promoted(), timeout_s=40
    )
    leader = a if a.is_leader else b
    print(
        f"\nlease granted, master killed before any replica saw it: {leader.owner} leads on "
        f"the promoted replica {time.monotonic() - killed_at:.2f} s after the kill; instants "
        f"A/B/both leading: {a_leads}/{b_leads}/{both}"
    )
    assert both == 0
    # Whoever leads now holds a lease the promoted replica granted, not the lost one.
    promoted = replicated.replica.client()
    try:
        assert (promoted.get(keys.leader) or b"").endswith(f"|{leader.owner}".encode())
    finally:
        promoted.close()


def test_a_confirmed_lease_survives_the_failover(
    replicated: Replicated, isolation: dict[str, str]
) -> None:
    """A's grant is confirmed by the replica; the master is SIGKILLed right after. The
    promoted replica still holds A's lease: B never leads while A does."""
    keys = KeyLayout(isolation["key_prefix"])
    a, b = _leaders(replicated.sentinel.url(), keys, ttl_s=3.0)
    _replica_acks(replicated.master)
    a.tick()
    assert a.is_leader
    replicated.master.kill()
    killed_at = time.monotonic()
    # Until the sentinel has promoted the replica and both producers have ticked on it.
    promoted: list[float] = []

    def settled() -> bool:
        if not promoted and replicated.promoted():
            promoted.append(time.monotonic())
        return bool(promoted) and time.monotonic() > promoted[0] + 2 * a.ttl_s

    a_leads, b_leads, both = _run_until(a, b, settled, timeout_s=40)
    print(
        f"\nconfirmed lease, master killed: promoted after {promoted[0] - killed_at:.2f} s; "
        f"instants A/B/both leading: {a_leads}/{b_leads}/{both}; leader now "
        f"{'A' if a.is_leader else 'B' if b.is_leader else 'none'}"
    )
    assert both == 0
    assert a.is_leader or b.is_leader


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
