"""Replay protection: a push's timestamp must be near our clock, and each signed
(timestamp, nonce, msg_signature) is accepted once while it could still pass that check."""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable

from producer.platform.errors import CallbackRejected

#: Pushes whose timestamp is further than this from our clock are stale.
DEFAULT_WINDOW_S = 300.0
#: Remembered pushes at most; beyond it the oldest go first (and are counted).
DEFAULT_MAX_REMEMBERED = 100_000

Key = tuple[int, str, str]


class ReplayGuard:
    """Thread-safe. `check_time` first (cheap, before the signature), then, for a push whose
    signature verified, `check_new`; `remember` once the push is stored, so a push that
    could not be stored is accepted again when WeChat retries it."""

    def __init__(
        self,
        *,
        window_s: float = DEFAULT_WINDOW_S,
        max_remembered: int = DEFAULT_MAX_REMEMBERED,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if window_s <= 0 or max_remembered < 1:
            raise ValueError("window_s must be positive and max_remembered at least 1")
        self.window_s = window_s
        self._max = max_remembered
        self._clock = clock
        self._lock = threading.Lock()
        self._seen: set[Key] = set()
        self._expiry: list[tuple[float, Key]] = []  # heap: when each key can be forgotten
        #: Keys forgotten before their time because the memory was full.
        self.evicted = 0

    def check_time(self, timestamp: str) -> int:
        """The timestamp as seconds; `stale` outside the window, `malformed` if not a number."""
        if not timestamp.isdigit() or len(timestamp) > 12:
            raise CallbackRejected("malformed", "timestamp is not a number of seconds")
        seconds = int(timestamp)
        if abs(self._clock() - seconds) > self.window_s:
            raise CallbackRejected("stale", "timestamp outside the accepted window")
        return seconds

    def check_new(self, timestamp_s: int, nonce: str, signature: str) -> None:
        """`replay` when this push was accepted already."""
        with self._lock:
            if (timestamp_s, nonce, signature.lower()) in self._seen:
                raise CallbackRejected("replay", "this push was accepted already")

    def remember(self, timestamp_s: int, nonce: str, signature: str) -> None:
        key = (timestamp_s, nonce, signature.lower())
        now = self._clock()
        with self._lock:
            self._forget_expired(now)
            if key in self._seen:
                return
            while len(self._seen) >= self._max:
                _, oldest = heapq.heappop(self._expiry)
                self._seen.discard(oldest)
                self.evicted += 1
            self._seen.add(key)
            # Past this, `check_time` refuses the timestamp: no need to remember it.
            heapq.heappush(self._expiry, (timestamp_s + self.window_s, key))

    def _forget_expired(self, now: float) -> None:
        while self._expiry and self._expiry[0][0] < now:
            _, key = heapq.heappop(self._expiry)
            self._seen.discard(key)

    def __len__(self) -> int:
        with self._lock:
            return len(self._seen)
