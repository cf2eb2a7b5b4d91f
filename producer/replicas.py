"""Writes that a replica must confirm before they count (`WAIT`), where Redis has replicas.

Replication is asynchronous: a master that dies right after a lease grant or a token write
can take it along, and the replica promoted in its place never saw it. With `replicas` > 0
a script runs in a pipeline followed by `WAIT replicas timeout_ms` on the same connection
(WAIT counts only that connection's writes), and the write is confirmed only when enough
replicas acknowledged it. Behind Redis Sentinel (a `redis+sentinel://` URL) the default is
one replica; a plain Redis URL waits for none.
"""

from __future__ import annotations

from typing import Any

import redis
from redis.commands.core import Script
from redis.sentinel import SentinelConnectionPool


def default_replicas(client: redis.Redis) -> int:
    """1 for a client that follows a Sentinel master, else 0."""
    return 1 if isinstance(client.connection_pool, SentinelConnectionPool) else 0


class ReplicaWait:
    """Runs scripts and says whether `replicas` replicas confirmed their writes."""

    def __init__(
        self, client: redis.Redis, *, replicas: int | None = None, timeout_ms: int = 500
    ) -> None:
        if replicas is not None and replicas < 0:
            raise ValueError("replicas must not be negative")
        if timeout_ms <= 0:
            raise ValueError("timeout_ms must be positive (WAIT 0 would block forever)")
        self._client = client
        self.replicas = default_replicas(client) if replicas is None else replicas
        self.timeout_ms = timeout_ms

    def run(self, script: Script, *, keys: list[Any], args: list[Any]) -> tuple[Any, bool]:
        """The script's reply and whether enough replicas confirmed (always True when none
        are required). Raises what redis-py raises."""
        if self.replicas <= 0:
            return script(keys=keys, args=args), True
        pipe = self._client.pipeline(transaction=False)
        script(keys=keys, args=args, client=pipe)
        pipe.execute_command("WAIT", self.replicas, self.timeout_ms)  # type: ignore[no-untyped-call]
        reply, acked = pipe.execute()
        return reply, int(acked) >= self.replicas
