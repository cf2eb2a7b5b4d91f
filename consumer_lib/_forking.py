"""A `TokenClient` across `os.fork()`.

Forking (gunicorn `--preload`, multiprocessing's fork): a client made, even started,
before `os.fork()` works in every child. An `os.register_at_fork` hook, held through a
weak reference so it keeps no client alive, runs in each child and gives the client there
its own background thread and broker connection (a new `Subscriber`, started if the
parent's was), its own Redis connections (a new client when we built the parent's; a
client passed in is left to redis-py, whose pools notice the new pid and reconnect) and
fresh locks (one held by a parent thread at the fork would never be released). The tokens
held are kept: they are still valid data. The parent's thread does not exist in the
child; its pika connection object is dropped there, never closed, since closing would
write to the socket the parent still uses.
"""

from __future__ import annotations

import logging
import os
import weakref
from typing import Protocol

log = logging.getLogger(__name__)


class ForkAware(Protocol):
    def _after_fork_in_child(self) -> None: ...


def renew_in_forked_children(client: ForkAware) -> None:
    """Register `client._after_fork_in_child` for every later fork, via a weak reference."""
    if not hasattr(os, "register_at_fork"):  # no fork on this platform
        return
    ref = weakref.ref(client)

    def after_in_child() -> None:
        alive = ref()
        if alive is None:
            return
        try:
            alive._after_fork_in_child()
        except Exception:
            log.exception("renewing the token client in the forked child %d failed", os.getpid())

    os.register_at_fork(after_in_child=after_in_child)
