"""The subscriber thread runs callbacks itself only when nothing else is queued or running:
an update handed over meanwhile waits its turn, so an app's versions still arrive in order."""

from __future__ import annotations

import threading

from consumer_lib._callbacks import CallbackThread
from consumer_lib.wire.update import TokenSource, TokenUpdate
from tests.waiting import wait_for


def update(version: int) -> TokenUpdate:
    return TokenUpdate(
        app_id="wxclaim000000000",
        value=f"TOKEN-{version}",
        version=version,
        issued_at=1.0,
        expires_at=2.0,
        source=TokenSource.REFRESH,
        producer_id="test",
    )


def test_a_claimed_update_runs_here_and_a_handed_over_one_waits_for_it() -> None:
    seen: list[tuple[int, threading.Thread]] = []
    running = threading.Event()
    release = threading.Event()

    def callback(got: TokenUpdate) -> None:
        seen.append((got.version, threading.current_thread()))
        if got.version == 1:
            running.set()
            release.wait(10)

    callbacks = CallbackThread([callback])
    assert callbacks.claim(update(1))
    here = threading.Thread(target=callbacks.run_claimed, args=(update(1),), daemon=True)
    here.start()
    assert running.wait(10)
    callbacks.submit(update(2))  # a caller's thread, while v1 runs on the subscriber's
    assert not callbacks.claim(update(3))  # queued behind v2: handed over too
    assert not callbacks.wait_idle(0.05)  # v1 still holds the turn
    assert [version for version, _ in seen] == [1]
    release.set()
    assert callbacks.wait_idle(10)
    assert [version for version, _ in seen] == [1, 2, 3]
    assert seen[0][1] is here
    assert all(thread not in (here, threading.current_thread()) for _, thread in seen[1:])
    callbacks.close()


def test_nothing_is_claimed_without_callbacks_or_after_close() -> None:
    assert not CallbackThread().claim(update(1))
    callbacks = CallbackThread([lambda _got: None])
    callbacks.close()
    assert not callbacks.claim(update(1))


def test_a_failing_callback_frees_the_turn() -> None:
    later: list[int] = []

    def boom(got: TokenUpdate) -> None:
        if got.version == 1:
            raise RuntimeError("callback bug")
        later.append(got.version)

    callbacks = CallbackThread([boom])
    assert callbacks.claim(update(1))
    callbacks.run_claimed(update(1))
    callbacks.submit(update(2))
    wait_for(lambda: later == [2], message="v2 after the failed v1")
    callbacks.close()
