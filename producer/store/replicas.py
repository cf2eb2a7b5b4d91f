"""Writes that a replica must confirm before they count (`WAIT`), where Redis has replicas.

Replication is asynchronous: a master that dies right after a lease grant or a token write
can take it along, and the replica promoted in its place never saw it. With `replicas` > 0
a function (FCALL) runs in a pipeline followed by `ROLE` and `WAIT n timeout_ms` on the same
connection (WAIT counts only that connection's writes), and the write is confirmed only
when enough replicas acknowledged it.

"Where Redis has replicas": the count required is `replicas`, but never more than the
master has connected (ROLE), so a lone master left by a failover still confirms leases
(else no producer could ever lead until a replica comes back). A replica that is
connected but lagging (a slow link, a partition not yet noticed) does not confirm, and
the write counts as not confirmed. Behind Redis Sentinel (a `redis+sentinel://` URL) the
default is one replica; a plain Redis URL waits for none.
"""

from __future__ import annotations

from typing import Any

import redis
from redis.sentinel import SentinelConnectionPool

from producer.store.functions import RedisScript, is_missing_function


def default_replicas(client: redis.Redis) -> int:
    """1 for a client that follows a Sentinel master, else 0."""
    return 1 if isinstance(client.connection_pool, SentinelConnectionPool) else 0


class ReplicaWait:
    """Runs the library's functions (`producer.store.functions`) and says whether `replicas`
    replicas confirmed their writes."""

    def __init__(
        self, client: redis.Redis, *, replicas: int | None = None, timeout_ms: int = 250
    ) -> None:
        if replicas is not None and replicas < 0:
            raise ValueError("replicas must not be negative")
        if timeout_ms <= 0:
            raise ValueError("timeout_ms must be positive (WAIT 0 would block forever)")
        self._client = client
        self.replicas = default_replicas(client) if replicas is None else replicas
        # WAIT must answer well within the socket timeout, or its answer times out and the
        # whole pipeline (the write included) is retried.
        socket_timeout_s = client.connection_pool.connection_kwargs.get("socket_timeout")
        if isinstance(socket_timeout_s, int | float) and socket_timeout_s > 0:
            timeout_ms = max(1, min(timeout_ms, int(socket_timeout_s * 1000 / 2)))
        self.timeout_ms = timeout_ms
        # Replicas the master had connected at the last call: how many WAIT waits for.
        # Starts high, so the first write behind Sentinel does wait.
        self._connected = self.replicas

    def run(self, script: RedisScript, *, keys: list[Any], args: list[Any]) -> tuple[Any, bool]:
        """The script's reply and whether enough replicas confirmed (always True when none
        are required). Raises what redis-py raises."""
        if self.replicas <= 0:
            return script(keys=keys, args=args), True
        try:
            return self._run_and_wait(script, keys=keys, args=args)
        except redis.exceptions.ResponseError as exc:
            if not is_missing_function(exc):
                raise
        # The library was lost since it was checked (a restart without data): check and
        # load it again, then once more.
        script.forget_loaded()
        return self._run_and_wait(script, keys=keys, args=args)

    def _run_and_wait(
        self, script: RedisScript, *, keys: list[Any], args: list[Any]
    ) -> tuple[Any, bool]:
        waiting_for = min(self.replicas, self._connected)
        pipe = self._client.pipeline(transaction=False)
        script(keys=keys, args=args, client=pipe)
        pipe.execute_command("ROLE")  # type: ignore[no-untyped-call]
        # WAIT 0 answers at once; WAIT n blocks until n replicas acked or the timeout.
        pipe.execute_command("WAIT", waiting_for, self.timeout_ms)  # type: ignore[no-untyped-call]
        reply, role, acked = pipe.execute()
        self._connected = connected_replicas(role)
        return reply, int(acked) >= min(self.replicas, self._connected)


def connected_replicas(role: Any) -> int:
    """How many replicas a `ROLE` answer lists (0 for anything but a master's answer)."""
    try:
        kind = role[0].decode() if isinstance(role[0], bytes) else str(role[0])
        return len(role[2]) if kind == "master" else 0
    except (TypeError, IndexError, AttributeError):
        return 0
