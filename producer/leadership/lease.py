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
from collections.abc import Callable

import redis

from consumer_lib.errors import StoreError, StoreLoginRefused
from consumer_lib.redis_errors import REDIS_ERRORS, describe_redis_error, translated
from producer.apps import TokenApi
from producer.leadership.clock import boottime
from producer.store.functions import FunctionLibrary
from producer.store.replicas import ReplicaWait

log = logging.getLogger(__name__)

#: No producer sets a lease TTL above this (`lease_ttl_s` is at most 60 s): a lease without an
#: expiry, or with a longer one, was written by something else and is treated as broken.
LONGEST_LEASE_MS = 60_000
#: How long a grant or renewal waits for a replica to confirm it (`WAIT`), where there is one.
REPLICA_WAIT_MS = 250

#: A lease is trusted locally for this share of its TTL after the renewal was sent, which
#: leaves room for clock drift between this host and Redis.
TRUST_SHARE = 0.8


class Leadership:
    """One producer's view of the lease; `tick()` in a loop, `release()` on shutdown."""

    def __init__(  # noqa: PLR0913 - keyword-only, six of ten defaulted
        self,
        client: redis.Redis,
        *,
        lease_key: str,
        epoch_key: str,
        owner: str,
        ttl_s: float = 10.0,
        on_change: Callable[[bool], None] | None = None,
        monotonic: Callable[[], float] = boottime,
        rand: Callable[[], float] = random.random,
        replicas: int | None = None,
        replica_wait_ms: int = REPLICA_WAIT_MS,
    ) -> None:
        """`monotonic` must keep counting while the host is suspended (the default,
        `boottime`, does on Linux), or a lease trusted before a suspend looks fresh after
        it. `replicas`: how many replicas must confirm a grant or renewal (`WAIT`) before
        it counts; by default 1 behind Sentinel (see `ReplicaWait`), else 0."""
        if "|" in owner:
            raise ValueError("owner must not contain '|'")
        self.owner = owner
        self.ttl_s = ttl_s
        self._lease_key = lease_key
        self._epoch_key = epoch_key
        self._on_change = on_change
        self._monotonic = monotonic
        self._rand = rand
        self._redis = client
        functions = FunctionLibrary(client)
        self._acquire = functions.function("lease_acquire")
        self._release = functions.function("lease_release")
        self._replicas = ReplicaWait(client, replicas=replicas, timeout_ms=replica_wait_ms)
        self._reported_broken: str | None = None
        self._said_unconfirmed = False
        # Guards the state below: `tick()` runs in one thread, `fenced()` in any refresher's.
        self._lock = threading.Lock()
        self._trusted_until = -float("inf")
        self._leading = False
        self._store_reachable = True
        self._said_ran_out = False
        self.epoch: int | None = None
        self.holder: str | None = None
        #: How often this producer became the leader (each one a takeover or a start).
        self.acquisitions = 0
        #: Why Redis refuses our login or a lease command (a configuration error); None
        #: since the last lease call that worked.
        self.login_refused: str | None = None

    # ------------------------------------------------------------ questions
    @property
    def fence_owner(self) -> str | None:
        """The owner id every token write of this producer is fenced with."""
        return self.owner

    @property
    def is_leader(self) -> bool:
        """True while this producer holds a lease it has confirmed recently enough."""
        return self._monotonic() < self._trusted_until

    @property
    def store_reachable(self) -> bool:
        """False since the last lease call to Redis failed, until one succeeds."""
        return self._store_reachable

    def may_fetch(self, token_api: TokenApi) -> bool:
        """Whether this producer may call upstream for an app using `token_api`."""
        if self.is_leader:
            return True
        # Redis away: the last leader carries on for stable tokens only (see the docstring).
        with self._lock:
            leading, reachable = self._leading, self._store_reachable
        return leading and not reachable and token_api is TokenApi.STABLE

    def lease_left_s(self) -> float:
        """Seconds of confirmed, trusted lease left on this producer's clock; 0 without."""
        return max(0.0, self._trusted_until - self._monotonic())

    def may_fetch_now(
        self, token_api: TokenApi, *, need_s: float, force_refresh: bool = False
    ) -> bool:
        """Call right before an upstream call: may it start now and finish, within `need_s`
        (the call's whole timeout), while the lease is still ours?

        With at least `need_s` of confirmed lease left: yes. Otherwise a forced refresh, or
        any classic fetch, never starts (a second fetcher would revoke the other's token);
        only a normal-mode stable fetch of the last leader may go on while Redis is away
        (WeChat hands every caller the same stable token).
        """
        left_s = self.lease_left_s()
        if left_s > 0 and left_s >= need_s:
            return True
        if force_refresh:
            return False
        return self._leading and not self._store_reachable and token_api is TokenApi.STABLE

    # ------------------------------------------------------------ actions
    def tick(self) -> float:
        """Take or renew the lease; return the seconds until the next tick."""
        sent_at = self._monotonic()
        try:
            held, detail, confirmed = self._call_acquire()
        except StoreError as exc:
            return self._store_unreachable(exc)
        self.login_refused = None
        with self._lock:
            came_back = not self._store_reachable
            self._store_reachable = True
            self._said_ran_out = False
            leading = self._leading
        if came_back:
            log.info("lease store reachable again")
        if held is None:
            # Broken lease (garbage, no expiry): the script gave it our TTL; it is replaced
            # at the first tick after it runs out.
            if self._reported_broken != detail:
                self._reported_broken = detail
                log.warning(
                    "the lease %s holds a broken value %s (not epoch|owner, or no expiry, or "
                    "one above %d ms): it now expires within %.1f s and is then replaced",
                    self._lease_key,
                    ascii(detail[:100]),
                    LONGEST_LEASE_MS,
                    self.ttl_s,
                )
            self.holder = None
            self._step_down("the lease is broken")
            return min(1.0, self.ttl_s / 5) * (0.75 + self._rand() / 2)
        if held and not confirmed:
            # Granted by a master that no replica has confirmed: a failover now could lose
            # it, and a standby would take it while we still fetch. Not a lease yet.
            if not self._said_unconfirmed:
                self._said_unconfirmed = True
                log.warning(
                    "lease of epoch %s not confirmed by %d replica(s) within %d ms: not "
                    "leading until a replica confirms it",
                    detail,
                    self._replicas.replicas,
                    self._replicas.timeout_ms,
                )
            self._step_down("the lease is not replicated")
            return min(1.0, self.ttl_s / 5)
        self._said_unconfirmed = False
        if held:
            with self._lock:
                self._trusted_until = sent_at + self.ttl_s * TRUST_SHARE
                self.epoch = int(detail)
                self.holder = self.owner
            if came_back and leading and self._on_change is not None:
                # Still leading after the outage: refreshers of classic tokens, idle while
                # the lease could not be confirmed, should not wait for their next step.
                self._on_change(True)
            self._set_leading(True)
            return self.ttl_s / 3
        holder = detail.partition("|")[2] or detail
        with self._lock:
            self.holder = holder
        self._step_down(f"held by {holder}")
        # Standbys poll about once a second (jittered), well inside the TTL.
        return min(1.0, self.ttl_s / 5) * (0.75 + self._rand() / 2)

    def _store_unreachable(self, exc: StoreError) -> float:
        """Say once that Redis is away (or refuses our login), and when the lease ran out
        meanwhile; return the seconds until the next tick."""
        with self._lock:
            was_reachable, self._store_reachable = self._store_reachable, False
            leading = self._leading
            ran_out = leading and not self.is_leader and not self._said_ran_out
            self._said_ran_out = self._said_ran_out or ran_out
        if isinstance(exc, StoreLoginRefused):  # a configuration error: one ERROR line
            if self.login_refused != str(exc):
                log.error("lease store: %s", exc)
            self.login_refused = str(exc)
        elif was_reachable:
            log.warning(
                "lease store unreachable (%s)%s",
                exc,
                "; still leading for stable tokens" if leading else "",
            )
        if ran_out:
            log.warning(
                "lease of epoch %s ran out while Redis is unreachable: "
                "classic tokens are no longer refreshed here",
                self.epoch,
            )
        return min(1.0, self.ttl_s / 5)

    def fenced(self) -> None:
        """A write was refused because another producer holds the lease: step down now."""
        self._step_down("a write was fenced off")

    def release(self) -> None:
        """Give the lease up (clean shutdown), so a standby takes over at once."""
        with self._lock:
            was_leading = self._leading
        self._step_down("shutting down", expected=True)
        if not was_leading:
            return
        try:
            self._release(keys=[self._lease_key], args=[self.owner])
            log.info("released the lease")
        except REDIS_ERRORS as exc:
            log.warning("could not release the lease: %s", describe_redis_error(exc))

    def _call_acquire(self) -> tuple[bool | None, str, bool]:
        """(held: True, False, or None for a broken lease; the epoch or the holder's value;
        whether the replicas confirmed it)."""
        with translated("taking the lease", self._redis):
            reply, confirmed = self._replicas.run(
                self._acquire,
                keys=[self._lease_key, self._epoch_key],
                args=[self.owner, max(1, int(self.ttl_s * 1000)), LONGEST_LEASE_MS],
            )
        try:
            status = int(reply[0])
            raw = reply[1]
            detail = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
        except (TypeError, ValueError, IndexError):
            raise StoreError(f"unexpected lease script answer {reply!r:.100}") from None
        if status == 3:
            return None, detail, confirmed
        return status == 1, detail, confirmed

    def _step_down(self, why: str, *, expected: bool = False) -> None:
        """Stop leading; logged at WARNING unless `expected` (a clean shutdown: INFO)."""
        with self._lock:
            self._trusted_until = -float("inf")
        self._set_leading(False, why, expected=expected)

    def _set_leading(self, leading: bool, why: str = "", *, expected: bool = False) -> None:
        with self._lock:  # one thread wins the change, so it is logged and told once
            if leading == self._leading:
                return
            self._leading = leading
            epoch = self.epoch
            if leading:
                self.acquisitions += 1
        if leading:
            log.info("leading now (epoch %s, lease %.1f s)", epoch, self.ttl_s)
        else:
            level = logging.INFO if expected else logging.WARNING
            log.log(level, "no longer the leader (epoch %s): %s", epoch, why)
        if self._on_change is not None:
            self._on_change(leading)
