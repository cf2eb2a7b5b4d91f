"""Leadership among producers: one lease in Redis, with an owner id and an epoch.

    {prefix}:leader        "{epoch}|{owner}", expiring after the lease TTL (PX)
    {prefix}:leader_epoch  incremented on every new acquisition

Any number of producers run `Leadership.tick()` in a loop. The holder renews the lease
every third of its TTL; the others try to take it about once a second, so a leader that
dies is replaced within the TTL, and one that stops cleanly (it releases the lease) at
once. Token writes by a producer carry its owner id as a fence: the compare-and-set in
`TokenStore.write` refuses them unless that owner still holds the lease, so a paused or
partitioned old leader that wakes up cannot overwrite what the new leader wrote.

While Redis is unreachable no one can confirm a lease. The last leader goes on fetching
stable tokens (WeChat hands every caller the same stable token, so a second fetcher in a
partition does no harm) but stops fetching classic tokens once its lease has run out
locally: two classic fetchers would invalidate each other's tokens.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable

import redis

from consumer_lib.errors import StoreError
from consumer_lib.snapshot import REDIS_ERRORS, describe_redis_error

from .apps import TokenApi

log = logging.getLogger(__name__)

# KEYS: lease, epoch counter. ARGV: owner, ttl_ms.
# Returns {1, epoch} when we hold it (taken or renewed), {0, current holder} otherwise.
_ACQUIRE = """
local cur = redis.call('GET', KEYS[1])
if cur then
  local sep = string.find(cur, '|', 1, true)
  if sep and string.sub(cur, sep + 1) == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return {1, string.sub(cur, 1, sep - 1)}
  end
  return {0, cur}
end
local epoch = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], epoch .. '|' .. ARGV[1], 'PX', ARGV[2])
return {1, tostring(epoch)}
"""

# KEYS: lease. ARGV: owner. Deletes the lease only if we hold it.
_RELEASE = """
local cur = redis.call('GET', KEYS[1])
if cur then
  local sep = string.find(cur, '|', 1, true)
  if sep and string.sub(cur, sep + 1) == ARGV[1] then
    redis.call('DEL', KEYS[1])
    return 1
  end
end
return 0
"""

#: A lease is trusted locally for this share of its TTL after the renewal was sent, which
#: leaves room for clock drift between this host and Redis.
TRUST_SHARE = 0.8


class Leadership:
    """One producer's view of the lease; `tick()` in a loop, `release()` on shutdown."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        lease_key: str,
        epoch_key: str,
        owner: str,
        ttl_s: float = 10.0,
        on_change: Callable[[bool], None] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
    ) -> None:
        if "|" in owner:
            raise ValueError("owner must not contain '|'")
        self.owner = owner
        self.ttl_s = ttl_s
        self._lease_key = lease_key
        self._epoch_key = epoch_key
        self._on_change = on_change
        self._monotonic = monotonic
        self._rand = rand
        self._acquire = client.register_script(_ACQUIRE)
        self._release = client.register_script(_RELEASE)
        self._lock = threading.Lock()
        self._trusted_until = -float("inf")
        self._leading = False
        self._store_reachable = True
        self._said_ran_out = False
        self.epoch: int | None = None
        self.holder: str | None = None

    # ------------------------------------------------------------ questions
    @property
    def fence_owner(self) -> str | None:
        """The owner id every token write of this producer is fenced with."""
        return self.owner

    @property
    def is_leader(self) -> bool:
        """True while this producer holds a lease it has confirmed recently enough."""
        return self._monotonic() < self._trusted_until

    def may_fetch(self, token_api: TokenApi) -> bool:
        """Whether this producer may call upstream for an app using `token_api`."""
        if self.is_leader:
            return True
        # Redis away: the last leader carries on for stable tokens only (see the docstring).
        return self._leading and not self._store_reachable and token_api is TokenApi.STABLE

    # ------------------------------------------------------------ actions
    def tick(self) -> float:
        """Take or renew the lease; return the seconds until the next tick."""
        sent_at = self._monotonic()
        try:
            held, detail = self._call_acquire()
        except StoreError as exc:
            if self._store_reachable:
                log.warning(
                    "lease store unreachable (%s)%s",
                    exc,
                    "; still leading for stable tokens" if self._leading else "",
                )
            self._store_reachable = False
            if self._leading and not self.is_leader and not self._said_ran_out:
                self._said_ran_out = True
                log.warning(
                    "lease of epoch %s ran out while Redis is unreachable: "
                    "classic tokens are no longer refreshed here",
                    self.epoch,
                )
            return min(1.0, self.ttl_s / 5)
        came_back = not self._store_reachable
        if came_back:
            log.info("lease store reachable again")
        self._store_reachable = True
        self._said_ran_out = False
        if held:
            with self._lock:
                self._trusted_until = sent_at + self.ttl_s * TRUST_SHARE
                self.epoch = int(detail)
                self.holder = self.owner
            if came_back and self._leading and self._on_change is not None:
                # Still leading after the outage: refreshers of classic tokens, idle while
                # the lease could not be confirmed, should not wait for their next step.
                self._on_change(True)
            self._set_leading(True)
            return self.ttl_s / 3
        self.holder = detail.partition("|")[2] or detail
        self._step_down(f"held by {self.holder}")
        # Standbys poll about once a second (jittered), well inside the TTL.
        return min(1.0, self.ttl_s / 5) * (0.75 + self._rand() / 2)

    def fenced(self) -> None:
        """A write was refused because another producer holds the lease: step down now."""
        self._step_down("a write was fenced off")

    def release(self) -> None:
        """Give the lease up (clean shutdown), so a standby takes over at once."""
        was_leading = self._leading
        self._step_down("shutting down")
        if not was_leading:
            return
        try:
            self._release(keys=[self._lease_key], args=[self.owner])
            log.info("released the lease")
        except REDIS_ERRORS as exc:
            log.warning("could not release the lease: %s", describe_redis_error(exc))

    def _call_acquire(self) -> tuple[bool, str]:
        try:
            reply = self._acquire(
                keys=[self._lease_key, self._epoch_key],
                args=[self.owner, max(1, int(self.ttl_s * 1000))],
            )
        except REDIS_ERRORS as exc:
            raise StoreError(describe_redis_error(exc)) from None
        detail = reply[1].decode() if isinstance(reply[1], bytes) else str(reply[1])
        return int(reply[0]) == 1, detail

    def _step_down(self, why: str) -> None:
        with self._lock:
            self._trusted_until = -float("inf")
        if self._leading:
            log.warning("no longer the leader (epoch %s): %s", self.epoch, why)
        self._set_leading(False)

    def _set_leading(self, leading: bool) -> None:
        if leading == self._leading:
            return
        self._leading = leading
        if leading:
            log.info("leading now (epoch %s, lease %.1f s)", self.epoch, self.ttl_s)
        if self._on_change is not None:
            self._on_change(leading)
