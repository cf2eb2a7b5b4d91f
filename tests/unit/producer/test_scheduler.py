"""The scheduler on a fake clock through its `run_due` seam, and the worker pool's threads."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable

import pytest

from producer.scheduler import Job, Scheduler, WorkerPool
from tests.conftest import FakeClock
from tests.waiting import wait_for


class Rig:
    """A scheduler whose dispatched jobs wait in a list until the test runs them."""

    def __init__(self) -> None:
        self.clock = FakeClock(1000.0)
        self.jobs: list[Job] = []
        self.scheduler = Scheduler(self.jobs.append, monotonic=self.clock, crash_pause_s=7.0)
        self.runs: list[tuple[str, float]] = []

    def task(self, name: str, delay_s: float | Callable[[], float]) -> Callable[[], float]:
        def run() -> float:
            self.runs.append((name, self.clock()))
            return delay_s() if callable(delay_s) else delay_s

        return run

    def run_jobs(self) -> None:
        jobs = list(self.jobs)
        self.jobs.clear()
        for job in jobs:
            job()

    def tick(self) -> float:
        """Dispatch what is due now and run it; the next due time."""
        self.scheduler.run_due(self.clock())
        self.run_jobs()
        return self.scheduler.run_due(self.clock())


def test_tasks_run_when_due_and_at_the_delay_they_return() -> None:
    """Each task runs at its due time, then again after the delay it returned."""
    rig = Rig()
    rig.scheduler.add("a", rig.task("a", 10.0))
    rig.scheduler.add("b", rig.task("b", 25.0), due_at=1005.0)
    assert rig.tick() == 1005.0
    assert rig.runs == [("a", 1000.0)]
    rig.clock.advance(5)
    assert rig.tick() == 1010.0
    rig.clock.advance(5)
    rig.tick()
    assert rig.runs == [("a", 1000.0), ("b", 1005.0), ("a", 1010.0)]
    assert rig.scheduler.due_at("a") == 1020.0
    assert rig.scheduler.due_at("b") == 1030.0


def test_nothing_due_dispatches_nothing() -> None:
    """Before its due time a task is not handed to the workers."""
    rig = Rig()
    rig.scheduler.add("a", rig.task("a", 1.0), due_at=2000.0)
    assert rig.scheduler.run_due(1999.9) == 2000.0
    assert rig.jobs == []


def test_a_task_never_runs_twice_at_once() -> None:
    """While a run is in flight the task is not dispatched again, even when woken; the wake
    makes it due right after that run."""
    rig = Rig()
    rig.scheduler.add("a", rig.task("a", 60.0))
    rig.scheduler.run_due(rig.clock())
    assert len(rig.jobs) == 1
    rig.scheduler.wake("a")
    rig.scheduler.wake_all()
    rig.clock.advance(100)
    rig.scheduler.run_due(rig.clock())
    assert len(rig.jobs) == 1  # still the first, not yet run
    rig.run_jobs()
    assert rig.scheduler.due_at("a") == rig.clock()  # woken while running: due now


def test_wake_makes_a_task_due_now() -> None:
    """A refresh request or a leadership change does not wait for the planned time."""
    rig = Rig()
    rig.scheduler.add("a", rig.task("a", 300.0))
    rig.scheduler.add("b", rig.task("b", 300.0))
    rig.tick()
    rig.clock.advance(1)
    rig.scheduler.wake("a")
    rig.tick()
    assert [name for name, _ in rig.runs] == ["a", "b", "a"]
    rig.clock.advance(1)
    rig.scheduler.wake_all()
    rig.tick()
    assert sorted(name for name, at in rig.runs if at == rig.clock()) == ["a", "b"]


def test_advance_only_moves_earlier() -> None:
    """`advance` brings a due time forward, never back."""
    rig = Rig()
    rig.scheduler.add("a", rig.task("a", 100.0))
    rig.tick()
    rig.scheduler.advance("a", 1050.0)
    assert rig.scheduler.due_at("a") == 1050.0
    rig.scheduler.advance("a", 1080.0)
    assert rig.scheduler.due_at("a") == 1050.0


def test_a_removed_task_is_not_run_again() -> None:
    """Removing a task, even mid-run, ends it."""
    rig = Rig()
    rig.scheduler.add("a", rig.task("a", 1.0))
    rig.scheduler.add("b", rig.task("b", 1.0))
    rig.scheduler.run_due(rig.clock())
    rig.scheduler.remove("a")  # while its job is in flight
    rig.run_jobs()
    rig.scheduler.remove("b")
    rig.clock.advance(10)
    assert rig.scheduler.run_due(rig.clock()) == math.inf
    assert rig.jobs == []
    assert rig.scheduler.keys() == []


def test_replacing_a_task_runs_only_the_new_one() -> None:
    """Adding under a known key replaces the task; the old one is never run again."""
    rig = Rig()
    rig.scheduler.add("a", rig.task("old", 1.0))
    rig.scheduler.add("a", rig.task("new", 1.0))
    rig.tick()
    rig.clock.advance(1)
    rig.tick()
    assert [name for name, _ in rig.runs] == ["new", "new"]


@pytest.mark.parametrize("outcome", ["raise", "nan", "negative"])
def test_a_failing_task_is_logged_and_retried_after_the_pause(
    outcome: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A task that raises or returns nonsense is logged and runs again after the pause."""
    rig = Rig()

    def bad() -> float:
        if outcome == "raise":
            raise RuntimeError("boom")
        return math.nan if outcome == "nan" else -1.0

    rig.scheduler.add("a", rig.task("a", bad))
    rig.tick()
    assert rig.scheduler.due_at("a") == rig.clock() + 7.0
    assert "task of a" in caplog.text


def test_wakes_do_not_grow_the_heap_without_bound() -> None:
    """Many wakes and reschedules leave the heap proportional to the tasks."""
    rig = Rig()
    for n in range(10):
        rig.scheduler.add(n, rig.task(str(n), 50.0))
    for _ in range(200):
        for n in range(10):
            rig.scheduler.advance(n, rig.clock() - 1)  # each a new heap slot
        rig.clock.advance(0.001)
    assert len(rig.scheduler._heap) <= 4 * 10 + 64 + 1


# ------------------------------------------------------------------ real threads
def test_at_most_workers_tasks_run_at_once_and_each_alone() -> None:
    """With 500 tasks due at once on 4 workers, 4 run and the other 496 wait in the queue;
    later runs, with wakes mixed in, never overlap a task with itself."""
    pool = WorkerPool(4, name="test-worker").start()
    scheduler = Scheduler(pool.submit).start()
    lock = threading.Lock()
    release = threading.Event()
    running: set[int] = set()
    peak = [0]
    overlaps = [0]
    runs = [0]

    def task(n: int) -> Callable[[], float]:
        def run() -> float:
            with lock:
                if n in running:
                    overlaps[0] += 1
                running.add(n)
                peak[0] = max(peak[0], len(running))
            release.wait(60)
            with lock:
                running.discard(n)
                runs[0] += 1
            return 0.001

        return run

    try:
        for n in range(500):
            scheduler.add(n, task(n))
        wait_for(lambda: pool._jobs.qsize() >= 496, timeout_s=30, message="all dispatched")
        assert len(running) == 4
        release.set()
        wait_for(lambda: runs[0] >= 2000, timeout_s=60, message="2000 runs")
        for n in range(0, 500, 3):
            scheduler.wake(n)
        wait_for(lambda: runs[0] >= 3000, timeout_s=60, message="3000 runs")
    finally:
        release.set()
        scheduler.stop()
        pool.close()
    print(f"runs {runs[0]}, peak concurrency {peak[0]}")
    assert peak[0] == 4
    assert overlaps[0] == 0


def test_closing_the_pool_does_not_wait_for_a_hung_job() -> None:
    """A job stuck in I/O (here: an event never set) does not hold up `close()`: workers
    are daemon threads and are abandoned, so SIGTERM is not delayed by an upstream call."""
    pool = WorkerPool(2, name="hung-worker").start()
    release = threading.Event()
    started = threading.Event()

    def hung() -> None:
        started.set()
        release.wait(120)

    pool.submit(hung)
    assert started.wait(10)
    pool.close(timeout_s=0.2)
    stuck = [t for t in threading.enumerate() if t.name.startswith("hung-worker")]
    assert stuck
    assert all(t.daemon for t in stuck)
    release.set()


def test_the_scheduling_thread_runs_a_woken_task() -> None:
    """A wake reaches a scheduling thread that sleeps until a far due time."""
    pool = WorkerPool(1, name="wake-worker").start()
    scheduler = Scheduler(pool.submit).start()
    ran = threading.Event()
    calls = [0]

    def task() -> float:
        calls[0] += 1
        if calls[0] > 1:
            ran.set()
        return 3600.0

    try:
        scheduler.add("a", task)
        wait_for(lambda: calls[0] == 1, message="first run")
        scheduler.wake("a")
        assert ran.wait(30)
    finally:
        scheduler.stop()
        pool.close()
