"""Who leads, and what the lease and follower threads do about it (`Succession`).

    lease      `Leadership.tick()` and the clock-skew check in a loop; a standby tries the
               lease every `STANDBY_LEASE_POLL_S`
    follower   one batched read of every snapshot per `follow_interval_s` (the leader's
               `LEADER_FOLLOW_FACTOR` times less often); after a takeover, every credential
               re-publishes what it holds (`take_over`) and the served apps are announced

A change of leadership arrives from the lease thread (`on_leadership`). Taking over wakes
the follower, which reads every snapshot, then takes over, in that order; stepping down
wakes every credential.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import redis

from consumer_lib.errors import StoreError
from consumer_lib.outage import OutageLog
from consumer_lib.wire.keys import KeyLayout
from producer.fleet import Fleet
from producer.leadership.announcement import announce
from producer.leadership.clock_skew import SkewMonitor
from producer.leadership.follower import SnapshotFollower
from producer.leadership.lease import Leadership
from producer.scheduler import Scheduler
from producer.store.remembering_codec import RememberingCodec
from producer.store.tokens import TokenStore

log = logging.getLogger(__name__)

#: A standby tries to take the lease at least this often (one small Lua call each).
STANDBY_LEASE_POLL_S = 0.25
#: The leader reads every snapshot this many times less often than a standby.
LEADER_FOLLOW_FACTOR = 3


class Succession:
    """The lease and follower loops (`threads`), the takeover and the announcement."""

    def __init__(  # noqa: PLR0913 - keyword-only: the parts a takeover spans
        self,
        *,
        leadership: Leadership,
        clock_skew: SkewMonitor,
        follower: SnapshotFollower,
        fleet: Fleet,
        scheduler: Scheduler,
        store: TokenStore,
        codec: RememberingCodec,
        redis_client: redis.Redis,
        keys: KeyLayout,
        producer_id: str,
        follow_interval_s: float,
        clock: Callable[[], float],
        stop: threading.Event,
    ) -> None:
        self._leadership = leadership
        self._clock_skew = clock_skew
        self._follower = follower
        self._fleet = fleet
        self._scheduler = scheduler
        self._store = store
        self._codec = codec
        self._redis = redis_client
        self._keys = keys
        self._producer_id = producer_id
        self._follow_interval_s = follow_interval_s
        self._clock = clock
        self._stop = stop
        self._follow_outage = OutageLog(log, "Redis (batched snapshot read)")
        self._follow_now = threading.Event()
        self._took_over = threading.Event()
        #: The lease and follower threads, started by `ProducerService.start()`.
        self.threads = [
            threading.Thread(target=self._run_lease, name="lease", daemon=True),
            threading.Thread(target=self._run_follower, name="follower", daemon=True),
        ]

    @property
    def takeover_pending(self) -> bool:
        """True from taking the lease until the follower thread has taken over."""
        return self._took_over.is_set()

    def wake_follower(self) -> None:
        """Cut the follower's wait short (a stop request: it sees the stop at once)."""
        self._follow_now.set()

    def on_leadership(self, leading: bool) -> None:
        """From the lease thread. Taking over: read every snapshot, then wake everything
        (the follower thread does both, in that order). Stepping down: wake everything."""
        if leading:
            self._took_over.set()
            self._follow_now.set()
        else:
            self._scheduler.wake_all()

    # ------------------------------------------------------------ loops
    def _run_lease(self) -> None:
        while not self._stop.is_set():
            try:
                delay_s = self._leadership.tick()
                self._clock_skew.check()
                if not self._leadership.is_leader:
                    # A standby notices a lapsed lease within this, not within a second:
                    # the takeover re-publishes 10,000 tokens and every moment counts.
                    delay_s = min(delay_s, STANDBY_LEASE_POLL_S)
            except Exception:
                log.exception("unexpected error in the lease loop")
                delay_s = 1.0
            self._stop.wait(delay_s)

    def _run_follower(self) -> None:
        while not self._stop.is_set():
            self._follow_now.clear()  # first: a takeover signalled from now on is not lost
            took_over = self._took_over.is_set()
            self._took_over.clear()
            try:
                self.follow()
                if took_over:
                    self.take_over()
                    self.announce()
            except Exception:
                log.exception("unexpected error in the follower loop")
                if took_over:
                    self._scheduler.wake_all()
            # The leader writes what it holds: its reads only repair and adopt overrides.
            every_s = self._follow_interval_s
            self._follow_now.wait(every_s * (LEADER_FOLLOW_FACTOR if self._leading() else 1))

    def _leading(self) -> bool:
        return self._leadership.is_leader

    # ------------------------------------------------------------ duties
    def take_over(self) -> None:
        """Every credential re-publishes what it holds now and says when it next needs a
        step: no upstream call, and no ten thousand steps queued behind the publisher."""
        now_m = time.monotonic()
        for refresher in self._fleet.all():
            delay_s = refresher.take_over()
            key = refresher.key
            if delay_s is None:
                self._scheduler.wake(key)  # a step is running: run another right after
            else:
                self._scheduler.advance(key, now_m + delay_s)

    def follow(self) -> None:
        """One batched read of every snapshot into the refreshers (`SnapshotFollower`)."""
        try:
            self._follower.tick(self._fleet.all())
        except StoreError as exc:
            self._follow_outage.failed(str(exc), self._follow_interval_s)
            return
        self._follow_outage.succeeded()

    def announce(self) -> None:
        """Write the served apps (`{prefix}:served`) and the verify key ids; never raises
        a store error (it is logged)."""
        app_ids = self._fleet.app_ids()
        try:
            announce(
                self._redis,
                self._keys,
                producer_id=self._producer_id,
                owner=self._leadership.owner,
                epoch=self._leadership.epoch,
                app_ids=app_ids,
                now_s=self._clock(),
            )
        except StoreError as exc:
            log.warning("could not announce the served apps: %s", exc)
        try:  # so that `wxtoken set` can warn before publishing what would be deleted
            self._store.announce_verify_keys(self._codec.verify_key_ids)
        except StoreError as exc:
            log.warning("could not announce the verify key ids: %s", exc)
