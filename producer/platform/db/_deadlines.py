"""Deadlines for database sockets: libpq has no read timeout, so a stalled link or a stopped
server would hold a thread forever. A block run under `socket_deadline` has its socket shut
down if it outlives the deadline; the driver's pending read then fails at once.

One watchdog thread serves every deadline (a heap of due times), however many transactions
run: arming and disarming cost a lock and a heap push, not a thread.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator


class _Watchdog:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._wake = threading.Condition(threading.Lock())
        self._due: list[tuple[float, int]] = []
        self._armed: dict[int, int] = {}  # entry -> socket file descriptor
        self._ids = itertools.count()
        self._thread: threading.Thread | None = None

    def arm(self, fileno: int, timeout_s: float) -> int:
        with self._wake:
            entry = next(self._ids)
            self._armed[entry] = fileno
            heapq.heappush(self._due, (self._clock() + timeout_s, entry))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="wxtoken-db-deadlines", daemon=True
                )
                self._thread.start()
            self._wake.notify()
            return entry

    def disarm(self, entry: int) -> None:
        """After this returns, `entry`'s socket is never shut down by the watchdog (the
        shutdown happens under the same lock)."""
        with self._wake:
            self._armed.pop(entry, None)

    def _run(self) -> None:
        with self._wake:
            while True:
                while self._due and self._due[0][1] not in self._armed:
                    heapq.heappop(self._due)  # disarmed: forget it
                if not self._due:
                    self._wake.wait()
                    continue
                due_at, entry = self._due[0]
                left = due_at - self._clock()
                if left > 0:
                    self._wake.wait(left)
                    continue
                heapq.heappop(self._due)
                _shut_down(self._armed.pop(entry))


_WATCHDOG = _Watchdog()


@contextlib.contextmanager
def socket_deadline(fileno: int, timeout_s: float) -> Iterator[None]:
    """Shut the socket `fileno` down if the block is still running after `timeout_s`."""
    entry = _WATCHDOG.arm(fileno, timeout_s)
    try:
        yield
    finally:
        _WATCHDOG.disarm(entry)


def _shut_down(fileno: int) -> None:
    """Shut a socket down under its owner's feet: its pending or next read fails."""
    with contextlib.suppress(OSError):
        sock = socket.socket(fileno=os.dup(fileno))
        try:
            sock.shutdown(socket.SHUT_RDWR)
        finally:
            sock.close()
