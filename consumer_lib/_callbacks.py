"""The callback thread: runs `on_update` callbacks off the threads that feed the cache.

Updates reach a `TokenClient` from its subscriber thread (pushes, snapshot polls) and from
the application's own threads (the Redis read of a `get_token()` that finds nothing held,
`report_invalid()` with the broker away). Callbacks never run on a caller's thread: an
update a caller's thread accepted is queued here, in the order the cache accepted it, and
one daemon thread calls every callback with it, one update at a time. An update the
subscriber thread accepted from a message is handed over the same way, unless nothing is
queued or running: then the subscriber thread claims it (`claim`) and runs the callbacks
itself (`run_claimed`), saving a thread hop per message; while it does, the callback thread
waits. Either way a callback sees the versions of an app in rising order, and one update at
a time. The callback thread starts with the first update queued after a callback is
registered; `close()` drops what is still queued and stops it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

from .wire.update import TokenUpdate

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

    def claim(self, update: TokenUpdate) -> bool:
        """Like `submit`, but when nothing is queued or running, queue nothing and return
        True: the caller must then pass `update` to `run_claimed` (outside its own locks).
        Only for the subscriber's thread, never a caller's."""
        with self._changed:
            if self._closed or not self._callbacks:
                return False
            if self._pending or self._busy:
                self._queue(update)
                return False
            self._busy = True
            return True

    def run_claimed(self, update: TokenUpdate) -> None:
        """Run the callbacks with an update `claim` returned True for, in this thread."""
        with self._changed:
            callbacks = list(self._callbacks)
        self._call(callbacks, update)

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
                # A claimed update runs on the subscriber thread: wait for it, in order.
                while (not self._pending or self._busy) and not self._closed:
                    self._changed.wait()
                if self._closed:
                    return
                update = self._pending.popleft()
                callbacks = list(self._callbacks)
                self._busy = True
            self._call(callbacks, update)

    def _call(self, callbacks: list[UpdateCallback], update: TokenUpdate) -> None:
        """Every callback with `update` (the caller set `_busy`), then not busy."""
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
