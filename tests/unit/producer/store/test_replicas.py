"""`ReplicaWait`: when a write counts as confirmed, with a stand-in Redis pipeline."""

from __future__ import annotations

from typing import Any

import fakeredis
import pytest

from producer.store.replicas import ReplicaWait, connected_replicas, default_replicas


class FakePipeline:
    """Records the commands; answers ROLE and WAIT as the test says."""

    def __init__(self, client: FakeClient) -> None:
        self._client = client
        self.commands: list[tuple[Any, ...]] = []

    def execute_command(self, *args: Any) -> None:
        self.commands.append(args)

    def execute(self) -> list[Any]:
        self._client.waits.append(next(c for c in self.commands if c[0] == "WAIT"))
        return ["script reply", self._client.role, self._client.acked]


class FakeClient:
    def __init__(self, *, role: Any, acked: int, socket_timeout: float = 2.0) -> None:
        self.role = role
        self.acked = acked
        self.waits: list[tuple[Any, ...]] = []
        self.connection_pool = type(
            "Pool", (), {"connection_kwargs": {"socket_timeout": socket_timeout}}
        )()

    def pipeline(self, transaction: bool = True) -> FakePipeline:
        assert transaction is False
        return FakePipeline(self)


def _script(keys: list[Any], args: list[Any], client: Any = None) -> None:
    client.execute_command("EVALSHA", *keys, *args)


MASTER_WITH_ONE = [b"master", 10, [[b"127.0.0.1", b"7001", b"10"]]]
LONE_MASTER = [b"master", 10, []]


def test_a_write_no_connected_replica_acknowledged_is_not_confirmed() -> None:
    """The master lists a replica that did not acknowledge in time: not confirmed."""
    client = FakeClient(role=MASTER_WITH_ONE, acked=0)
    wait = ReplicaWait(client, replicas=1, timeout_ms=100)  # type: ignore[arg-type]
    reply, confirmed = wait.run(_script, keys=["k"], args=["v"])  # type: ignore[arg-type]
    assert reply == "script reply"
    assert not confirmed
    assert client.waits == [("WAIT", 1, 100)]


def test_a_lone_master_confirms_on_its_own_and_stops_waiting() -> None:
    """After a failover left no replica, writes confirm, and WAIT no longer blocks (0)."""
    client = FakeClient(role=LONE_MASTER, acked=0)
    wait = ReplicaWait(client, replicas=1, timeout_ms=100)  # type: ignore[arg-type]
    assert wait.run(_script, keys=[], args=[])[1]  # type: ignore[arg-type]
    assert wait.run(_script, keys=[], args=[])[1]  # type: ignore[arg-type]
    assert client.waits == [("WAIT", 1, 100), ("WAIT", 0, 100)]


def test_the_wait_stays_well_inside_the_socket_timeout() -> None:
    """WAIT never blocks for more than half the socket timeout (else its reply times out)."""
    client = FakeClient(role=MASTER_WITH_ONE, acked=1, socket_timeout=0.2)
    assert ReplicaWait(client, replicas=1, timeout_ms=500).timeout_ms == 100  # type: ignore[arg-type]


@pytest.mark.parametrize("role", [None, [], [b"slave", b"x", 1], "garbage", [b"master", 1]])
def test_a_strange_role_answer_counts_no_replica(role: Any) -> None:
    """Anything but a master's ROLE answer counts as no connected replica."""
    assert connected_replicas(role) == 0


def test_plain_redis_waits_for_no_replica() -> None:
    """Without Sentinel nothing is waited for by default, and no pipeline is used."""
    client = fakeredis.FakeRedis()
    assert default_replicas(client) == 0
    script = client.register_script("return 7")
    assert ReplicaWait(client).run(script, keys=[], args=[]) == (7, True)
