"""The callback thread: runs `on_update` callbacks off the threads that feed the cache.

Updates reach a `TokenClient` from its subscriber thread (pushes, snapshot polls) and from
the application's own threads (the Redis read of a `get_token()` that finds nothing held,
`report_invalid()` with the broker away). Callbacks never run on any of those threads: every
accepted update is queued here, in the order the cache accepted it, and one daemon thread
calls every callback with it, one update at a time, so a callback sees the versions of an
app in rising order. A slow callback delays later callbacks, never the broker connection
(the subscriber thread goes on pumping it: heartbeats, later updates into `get_token()`).
The callback thread starts with the first update queued after a callback is
registered; `close()` drops what is still queued and stops it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

from ..wire.update import TokenUpdate

log = logging.getLogger(__name__)

UpdateCallback = Callable[[TokenUpdate], None]


class CallbackThread:
    """Calls the registered callbacks with each submitted update, in order, in one thread."""

    def __init__(
        self, callbacks: list[UpdateCallback] | None = None, *, name: str = "wxtoken-callbacks"
    ) -> None:
        self._callbacks = list(callbacks or [])
        self._name = name
        self._pending: deque[TokenUpdate] = deque()
        self._changed = threading.Condition()
        self._busy = False
        self._idle_waiters = 0  # threads in `wait_idle`
        self._closed = False
        self._thread: threading.Thread | None = None

    @property
    def callbacks(self) -> list[UpdateCallback]:
        """A copy of the registered callbacks."""
        with self._changed:
            return list(self._callbacks)

    def add(self, callback: UpdateCallback) -> None:
        """Register `callback` for every update submitted from now on."""
        with self._changed:
            self._callbacks.append(callback)

    def submit(self, update: TokenUpdate) -> None:
        """Queue `update` for the callbacks; returns at once. Callable from any thread."""
        with self._changed:
            if self._closed or not self._callbacks:
                return
            self._queue(update)

    def _queue(self, update: TokenUpdate) -> None:
        """Under `_changed`: append `update` and wake (or start) the thread."""
        self._pending.append(update)
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()
        self._changed.notify_all()

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait up to `timeout_s` until every queued update went through the callbacks."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            self._idle_waiters += 1
            try:
                while self._pending or self._busy:
                    remaining_s = deadline - time.monotonic()
                    if remaining_s <= 0:
                        return False
                    self._changed.wait(remaining_s)
            finally:
                self._idle_waiters -= 1
        return True

    def close(self, timeout_s: float = 2.0) -> None:
        """Drop what is queued and stop the thread, waiting up to `timeout_s`. Idempotent."""
        with self._changed:
            self._closed = True
            self._pending.clear()
            self._changed.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout_s)

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._pending and not self._closed:
                    self._changed.wait()
                if self._closed:
                    return
                update = self._pending.popleft()
                callbacks = list(self._callbacks)
                self._busy = True
            self._call(callbacks, update)

    def _call(self, callbacks: list[UpdateCallback], update: TokenUpdate) -> None:
        """Every callback with `update` (`_run` set `_busy`: `wait_idle` waits for it)."""
        try:
            for callback in callbacks:
                try:
                    callback(update)
                except Exception:
                    log.exception("on_update callback %r failed", callback)
        finally:
            with self._changed:
                self._busy = False
                if self._pending or self._idle_waiters:  # else no one waits: no wake-up
                    self._changed.notify_all()
