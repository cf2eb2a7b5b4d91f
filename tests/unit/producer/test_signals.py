"""Signals reach the main loop as data: nothing runs inside the handler that could deadlock."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

from producer.signals import SignalInbox
from tests.integration.procs import REPO_ROOT


def test_the_signals_delivered_are_returned_in_order() -> None:
    with SignalInbox([signal.SIGUSR1, signal.SIGUSR2]) as inbox:
        os.kill(os.getpid(), signal.SIGUSR2)
        os.kill(os.getpid(), signal.SIGUSR1)
        received = inbox.wait(5)
        if len(received) < 2:  # the second byte may follow the first read
            received += inbox.wait(5)
    assert received == [signal.SIGUSR2, signal.SIGUSR1]


def test_no_signal_no_news() -> None:
    with SignalInbox([signal.SIGUSR1]) as inbox:
        assert inbox.wait(0.01) == []


def test_a_signal_it_does_not_watch_is_not_reported() -> None:
    """Another Python handler's signal lands on the same wakeup socket; it is not ours."""
    seen: list[int] = []
    before = signal.signal(signal.SIGUSR2, lambda signum, _frame: seen.append(signum))
    try:
        with SignalInbox([signal.SIGUSR1]) as inbox:
            os.kill(os.getpid(), signal.SIGUSR2)
            assert inbox.wait(0.5) == []
        assert seen == [signal.SIGUSR2]
    finally:
        signal.signal(signal.SIGUSR2, before)


def test_closing_puts_back_the_handlers_and_the_wakeup_descriptor() -> None:
    def mine(signum: int, frame: object) -> None:
        del signum, frame

    before = signal.signal(signal.SIGUSR1, mine)
    try:
        inbox = SignalInbox([signal.SIGUSR1])
        assert signal.getsignal(signal.SIGUSR1) is not mine
        inbox.close()
        inbox.close()  # idempotent
        assert signal.getsignal(signal.SIGUSR1) is mine
        assert signal.set_wakeup_fd(-1) == -1  # none was set before the inbox
    finally:
        signal.signal(signal.SIGUSR1, before)


#: A main loop of the producer's shape, spinning as fast as it can on an Event that the
#: handler of old set: with `stop.set()` inside the handler, most runs of this hung for good.
_BUSY_MAIN_LOOP = textwrap.dedent(
    """
    import signal, sys, threading
    from producer.signals import STOP_SIGNALS, SignalInbox
    stop = threading.Event()
    with SignalInbox(STOP_SIGNALS) as inbox:
        print("ready", flush=True)
        while not stop.wait(0):
            if inbox.wait(0):
                stop.set()
    print("stopped", flush=True)
    """
)


def test_a_stop_signal_always_stops_a_busy_main_loop() -> None:
    """SIGTERM at whatever moment ends the loop: 20 of 20 runs exit 0 within 10 s each."""
    for _ in range(20):
        child = subprocess.Popen(
            [sys.executable, "-c", _BUSY_MAIN_LOOP],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "ready"
            child.send_signal(signal.SIGTERM)
            assert child.wait(10) == 0, "the loop did not see SIGTERM"
            assert child.stdout.read().strip() == "stopped"
        finally:
            if child.poll() is None:
                child.kill()
                child.wait(10)
            assert child.stdout is not None
            child.stdout.close()
