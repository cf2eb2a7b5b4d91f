"""The callback thread: every accepted update goes through it, in order; a failing callback
does not stop the next update, and nothing is run after `close()` or without callbacks."""

from __future__ import annotations

import threading

from consumer_lib._client.callbacks import CallbackThread
from consumer_lib.wire.update import TokenSource, TokenUpdate
from tests.waiting import wait_for


def update(version: int) -> TokenUpdate:
    return TokenUpdate(
        app_id="wxcallback000000",
        value=f"TOKEN-{version}",
        version=version,
        issued_at=1.0,
        expires_at=2.0,
        source=TokenSource.REFRESH,
        producer_id="test",
    )


def test_submitted_updates_run_in_order_on_the_callback_thread() -> None:
    """`submit` returns at once; the callbacks run on the thread of their own, in order."""
    seen: list[tuple[int, int]] = []
    callbacks = CallbackThread([lambda got: seen.append((threading.get_ident(), got.version))])
    for version in range(1, 6):
        callbacks.submit(update(version))
    assert callbacks.wait_idle(10)
    assert [version for _, version in seen] == [1, 2, 3, 4, 5]
    assert threading.get_ident() not in {thread for thread, _ in seen}
    callbacks.close()


def test_a_failing_callback_does_not_stop_the_next_update() -> None:
    later: list[int] = []

    def boom(got: TokenUpdate) -> None:
        if got.version == 1:
            raise RuntimeError("callback bug")
        later.append(got.version)

    callbacks = CallbackThread([boom])
    callbacks.submit(update(1))
    callbacks.submit(update(2))
    wait_for(lambda: later == [2], message="v2 after the failed v1")
    callbacks.close()


def test_nothing_runs_without_callbacks_or_after_close() -> None:
    ran: list[int] = []
    empty = CallbackThread()
    empty.submit(update(1))
    assert empty.wait_idle(1)
    callbacks = CallbackThread([lambda got: ran.append(got.version)])
    callbacks.close()
    callbacks.submit(update(1))
    assert callbacks.wait_idle(1)
    assert ran == []
