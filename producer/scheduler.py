"""Many timers, few threads: one scheduling thread over a heap of due times, a bounded pool.

Each credential the producer keeps is a *task*: a callable that does what is due and returns
the seconds until it wants to run again (`AppRefresher.step`). The `Scheduler` keeps every
task's next due time in a heap; its one thread sleeps until the earliest, then hands due
tasks to a `WorkerPool` of daemon threads fed by a queue. So the thread count is the pool
size plus one, whatever the number of apps, and at most `workers` tasks (and therefore
upstream calls) run at once.

Rules:
- A task never runs twice at once: while it runs it is not in the heap; a `wake()` that
  arrives meanwhile makes it due again as soon as it returns.
- `wake(key)` / `wake_all()` make tasks due now (a refresh request, a leadership change)
  and wake the scheduling thread.
- A task that raises is logged and tried again after `crash_pause_s`.
- `run_due(now)` is the seam for tests: it dispatches every task due at `now` (monotonic
  seconds) through the dispatcher and returns the earliest remaining due time; the thread
  is just `run_due` in a loop. Tests give a dispatcher that records jobs and run them by
  hand, with no thread and no sleep.

The workers are daemon threads fed by a `queue.SimpleQueue`, not a
`concurrent.futures.ThreadPoolExecutor`: its workers are joined at interpreter exit, so one
upstream call hanging for its whole timeout would hold up SIGTERM.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass

log = logging.getLogger(__name__)

Task = Callable[[], float]
Job = Callable[[], None]

#: After a task raised, wait this long before running it again.
CRASH_PAUSE_S = 5.0
#: The scheduling thread looks at the heap at least this often, whatever is due.
IDLE_WAIT_S = 1.0
#: ... and sleeps at least this long: tasks due within it are dispatched together.
MIN_SLEEP_S = 0.02


@dataclass(slots=True)
class _Entry:
    task: Task
    due_at: float
    generation: int = 0
    running: bool = False
    woken: bool = False
    removed: bool = False


class WorkerPool:
    """`workers` daemon threads running jobs from one queue; `close()` does not wait for a
    job stuck in I/O longer than its timeout (the thread is a daemon and is abandoned)."""

    def __init__(self, workers: int, *, name: str = "worker") -> None:
        if workers < 1:
            raise ValueError("a pool needs at least one worker")
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._run, name=f"{name}-{n}", daemon=True)
            for n in range(workers)
        ]
        self._started = False

    @property
    def size(self) -> int:
        return len(self._threads)

    def start(self) -> WorkerPool:
        if not self._started:
            self._started = True
            for thread in self._threads:
                thread.start()
        return self

    def submit(self, job: Job) -> None:
        self._jobs.put(job)

    def close(self, timeout_s: float = 1.0) -> None:
        """Ask every worker to stop after its current job; wait up to `timeout_s` in all."""
        for _ in self._threads:
            self._jobs.put(None)
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            if thread.is_alive() and thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            try:
                job()
            except Exception:  # a job must not end its worker
                log.exception("unexpected error in a worker job")


class Scheduler:
    """Runs keyed tasks when due, through `dispatch` (a `WorkerPool.submit`)."""

    def __init__(
        self,
        dispatch: Callable[[Job], None],
        *,
        monotonic: Callable[[], float] = time.monotonic,
        crash_pause_s: float = CRASH_PAUSE_S,
        name: str = "scheduler",
    ) -> None:
        self._dispatch = dispatch
        self._monotonic = monotonic
        self._crash_pause_s = crash_pause_s
        self._entries: dict[Hashable, _Entry] = {}
        self._heap: list[tuple[float, int, int, Hashable]] = []
        self._seq = itertools.count()
        self._changed = threading.Condition()
        self._stopped = False
        #: While the scheduling thread waits: when it wakes by itself (else -inf).
        self._sleeping_until = -math.inf
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    # ------------------------------------------------------------ tasks
    def add(self, key: Hashable, task: Task, *, due_at: float | None = None) -> None:
        """Schedule `task` under `key` at `due_at` (monotonic s; default now), replacing a
        task of that key (which, if running, finishes its current run)."""
        with self._changed:
            old = self._entries.get(key)
            if old is not None:
                old.removed = True
            entry = _Entry(task, self._monotonic() if due_at is None else due_at)
            self._entries[key] = entry
            self._push(key, entry)

    def remove(self, key: Hashable) -> None:
        """Forget `key`'s task; a run in progress finishes, and it is not run again."""
        with self._changed:
            entry = self._entries.pop(key, None)
            if entry is not None:
                entry.removed = True

    def keys(self) -> list[Hashable]:
        with self._changed:
            return list(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def wake(self, key: Hashable) -> None:
        """Make `key`'s task due now (or right after its current run)."""
        self.wake_many([key])

    def wake_all(self) -> None:
        with self._changed:
            keys = list(self._entries)
        self.wake_many(keys)

    def wake_many(self, keys: Iterable[Hashable]) -> None:
        now = self._monotonic()
        with self._changed:
            for key in keys:
                entry = self._entries.get(key)
                if entry is None:
                    continue
                if entry.running:
                    entry.woken = True
                elif entry.due_at > now:
                    entry.due_at = now
                    self._push(key, entry)

    def advance(self, key: Hashable, due_at: float) -> None:
        """Make `key`'s task due at `due_at` if that is earlier than planned."""
        with self._changed:
            entry = self._entries.get(key)
            if entry is None or entry.running or entry.due_at <= due_at:
                return
            entry.due_at = due_at
            self._push(key, entry)

    def due_at(self, key: Hashable) -> float | None:
        """When `key`'s task is next due (None while it runs or when unknown)."""
        with self._changed:
            entry = self._entries.get(key)
            if entry is None or entry.running:
                return None
            return entry.due_at

    # ------------------------------------------------------------ running
    def run_due(self, now: float) -> float:
        """Dispatch every task due at `now`; return the earliest due time left (inf if none)."""
        due: list[tuple[Hashable, _Entry]] = []
        with self._changed:
            while self._heap and self._heap[0][0] <= now:
                _, _, generation, key = heapq.heappop(self._heap)
                entry = self._entries.get(key)
                if entry is None or entry.removed or entry.running:
                    continue
                if generation != entry.generation:
                    continue  # a stale heap slot: the entry was rescheduled since
                entry.running = True
                due.append((key, entry))
            next_due = self._next_due_locked()
        for key, entry in due:
            self._dispatch(self._job(key, entry))
        return next_due

    def start(self) -> Scheduler:
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 1.0) -> None:
        """Stop the scheduling thread (running tasks finish on their workers). Idempotent."""
        with self._changed:
            self._stopped = True
            self._changed.notify()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)

    def _loop(self) -> None:
        while True:
            self.run_due(self._monotonic())
            with self._changed:
                if self._stopped:
                    return
                now = self._monotonic()
                next_due = self._next_due_locked()  # under the lock: nothing slips in
                if next_due <= now:
                    continue
                # Tasks due within MIN_SLEEP_S of each other go out in one wake-up.
                wait_s = min(IDLE_WAIT_S, max(MIN_SLEEP_S, next_due - now))
                self._sleeping_until = now + wait_s
                self._changed.wait(wait_s)
                self._sleeping_until = -math.inf  # awake: no one needs to notify
                if self._stopped:
                    return

    def _job(self, key: Hashable, entry: _Entry) -> Job:
        def job() -> None:
            try:
                delay_s = entry.task()
                if not math.isfinite(delay_s) or delay_s < 0:
                    raise ValueError(f"task returned a bad delay {delay_s!r}")
            except Exception:
                log.exception("unexpected error in the task of %s", key)
                delay_s = self._crash_pause_s
            self._finished(key, entry, delay_s)

        return job

    def _finished(self, key: Hashable, entry: _Entry, delay_s: float) -> None:
        with self._changed:
            entry.running = False
            if entry.removed:
                return
            entry.due_at = self._monotonic() + (0.0 if entry.woken else delay_s)
            entry.woken = False
            self._push(key, entry)

    def _push(self, key: Hashable, entry: _Entry) -> None:
        # A process-wide sequence: a slot left by a replaced entry never matches the new one.
        entry.generation = next(self._seq)
        heapq.heappush(self._heap, (entry.due_at, entry.generation, entry.generation, key))
        if entry.due_at < self._sleeping_until:
            self._changed.notify()  # due before the scheduling thread would wake
        if len(self._heap) > 4 * len(self._entries) + 64:
            self._compact_locked()

    def _compact_locked(self) -> None:
        """Drop stale heap slots, so wakes and reschedules never grow the heap unbounded."""
        self._heap = [
            slot
            for slot in self._heap
            if (entry := self._entries.get(slot[3])) is not None
            and not entry.running
            and slot[2] == entry.generation
        ]
        heapq.heapify(self._heap)

    def _next_due_locked(self) -> float:
        while self._heap:
            _, _, generation, key = self._heap[0]
            entry = self._entries.get(key)
            if entry is None or entry.removed or entry.running or generation != entry.generation:
                heapq.heappop(self._heap)
                continue
            return entry.due_at
        return math.inf
