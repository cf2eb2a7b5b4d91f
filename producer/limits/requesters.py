"""Per-requester limits on refresh requests: a token bucket per broker identity.

The requester named inside a `RefreshRequest` is whatever its sender wrote; the AMQP
`user_id` property is checked by RabbitMQ (a message whose `user_id` is not its
connection's login is refused), so that is the identity limited: `user:<login>`. Requests
published without a `user_id` cannot be told apart and share one allowance
(`UNVERIFIED`). The allowance is kept per identity and credential (`about`: app and kind),
so one login's flood about one app cannot starve its own reports about another; the
request listener drops requests about apps not served and tokens never held before they
are charged (`RequestListener`'s `screen`). Each (identity, credential) may send `burst`
requests at once and `rate_per_s` a second after that; the rest is dropped, counted, and
logged at most once a minute for all of them together, with the count since the last
line (`SummedWarning`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from producer.limits.bucket import TokenBucket
from producer.observability.summed_log import SummedWarning

log = logging.getLogger(__name__)

#: The one identity of every request that carries no broker-checked `user_id`.
UNVERIFIED = "unverified (no user_id)"
#: Drops are logged at most this often (all identities together).
DROP_LOG_EVERY_S = 60.0
#: Allowances (identity, credential) tracked at most (the least recently seen go first):
#: logins times served credentials, since requests about others are never charged.
MAX_IDENTITIES = 16_384


class RequesterLimits:
    """Admits or drops each request by its sender's identity; thread-safe."""

    def __init__(
        self,
        *,
        rate_per_s: float = 1.0,
        burst: int = 30,
        clock: Callable[[], float] = time.monotonic,
        max_identities: int = MAX_IDENTITIES,
    ) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("rate_per_s must be positive and burst at least 1")
        self._rate_per_s = rate_per_s
        self._burst = float(burst)
        self._clock = clock
        self._max_identities = max_identities
        self._lock = threading.Lock()
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()
        # One line a minute for every allowance together: their number grows with the apps.
        self._drops = SummedWarning(log, every_s=DROP_LOG_EVERY_S, clock=clock)
        #: Requests dropped, all identities together.
        self.dropped = 0

    @staticmethod
    def identity(user_id: str | None) -> str:
        """Whom a request is counted against: its broker login, or `UNVERIFIED`."""
        return f"user:{user_id[:128]}" if user_id else UNVERIFIED

    def admit(self, user_id: str | None, requester: str, *, about: str | None = None) -> bool:
        """True if the request may go on; False (counted, maybe logged) if dropped.
        `about` names the credential (`app/kind`): each has its own allowance."""
        who = self.identity(user_id) if about is None else f"{self.identity(user_id)} about {about}"
        now_s = self._clock()
        with self._lock:
            bucket = self._buckets.get(who)
            if bucket is None:
                bucket = TokenBucket(self._rate_per_s, self._burst)
                self._buckets[who] = bucket
                while len(self._buckets) > self._max_identities:
                    self._buckets.popitem(last=False)
            self._buckets.move_to_end(who)
            if bucket.try_take(now_s):
                return True
            self.dropped += 1
        self._drops.note(
            "dropping refresh requests from %s (last named %s): over %g/s (burst %d)",
            who,
            requester,
            self._rate_per_s,
            int(self._burst),
        )
        return False
