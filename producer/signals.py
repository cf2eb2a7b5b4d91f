"""Process signals (SIGTERM, SIGINT, SIGHUP) received as data by the main loop.

A Python signal handler runs in the main thread between two bytecodes, wherever that thread
happens to be, possibly holding a lock. `threading.Event.set()` from a handler deadlocks when
the main thread was inside `Event.wait()` on the same event and held its lock at that moment
(the family of python/cpython#126434); a producer once hung on SIGTERM that way. Here the
interpreter's C-level handler writes the signal's number to a socket
(`signal.set_wakeup_fd`), the Python-level handler does nothing, and the main loop reads the
numbers in `SignalInbox.wait()` and acts on them as ordinary code.
"""

from __future__ import annotations

import select
import signal
import socket
from collections.abc import Iterable
from types import FrameType, TracebackType
from typing import Any

#: The signals that ask a wxtoken program to stop cleanly.
STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})

#: Bytes read from the wakeup socket at once (one byte per signal delivered).
_READ_BYTES = 4096


def _noted(signum: int, frame: FrameType | None) -> None:
    """The Python-level handler: nothing. The byte on the wakeup socket is the news."""
    del signum, frame


class SignalInbox:
    """Receives `signals` while open; `wait()` returns those delivered since the last call.

    Open and use it from the main thread only (the only thread Python lets set handlers).
    Closing restores the handlers and the wakeup descriptor that were there before.
    """

    def __init__(self, signals: Iterable[signal.Signals]) -> None:
        self._watched = frozenset(signals)
        self._reader, self._writer = socket.socketpair()
        self._reader.setblocking(False)
        self._writer.setblocking(False)
        self._previous_fd = signal.set_wakeup_fd(self._writer.fileno(), warn_on_full_buffer=False)
        self._previous: dict[signal.Signals, Any] = {
            sig: signal.signal(sig, _noted) for sig in self._watched
        }

    def wait(self, timeout_s: float) -> list[signal.Signals]:
        """The watched signals delivered (in order) since the last call, waiting up to
        `timeout_s` for the first; [] when none came."""
        ready, _, _ = select.select([self._reader], [], [], timeout_s)
        if not ready:
            return []
        try:
            numbers = self._reader.recv(_READ_BYTES)
        except BlockingIOError:
            return []
        # Another Python-level handler's signals land here too: not ours to act on.
        return [signal.Signals(n) for n in numbers if n in self._watched]

    def close(self) -> None:
        """Put back the previous handlers and wakeup descriptor. Idempotent."""
        if self._reader.fileno() < 0:
            return
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        signal.set_wakeup_fd(self._previous_fd)
        self._reader.close()
        self._writer.close()

    def __enter__(self) -> SignalInbox:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
