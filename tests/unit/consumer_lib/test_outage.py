"""`OutageLog`: an outage logged once when it starts, reminded now and then, its end logged."""

from __future__ import annotations

import logging
import threading

import pytest

from consumer_lib.outage import OutageLog

LOGGER = "test.outage"


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now_s = 0.0

    def __call__(self) -> float:
        return self.now_s


@pytest.fixture
def clock() -> Clock:
    return Clock()


def lines(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    return [(r.levelname, r.getMessage()) for r in caplog.records]


def test_an_outage_is_one_warning_in_words_and_one_line_when_it_ends(
    caplog: pytest.LogCaptureFixture, clock: Clock
) -> None:
    """Nine failed attempts with pika's varying internals log one WARNING ("broker
    unreachable: connection closed"); the end is one INFO with its length; a refused login
    is one ERROR however often it is retried."""
    caplog.set_level(logging.INFO)
    outage = OutageLog(logging.getLogger(LOGGER), "broker", monotonic=clock)
    for n in range(9):
        clock.now_s += 1.1
        detail = f"IncompatibleProtocolError: StreamLostError: attempt {n}"
        outage.failed("connection refused" if n % 2 else "connection closed", 0.5, detail=detail)
    clock.now_s += 0.4
    outage.succeeded()
    assert lines(caplog) == [
        ("WARNING", "broker unreachable: connection closed"),
        ("INFO", "broker available again after 9.2 s and 9 failed attempt(s)"),
    ]
    caplog.clear()
    for _ in range(5):
        outage.refused("the broker refused user 'u' (...): check WXTOKEN_AMQP_URL", 15.0)
    assert lines(caplog) == [
        (
            "ERROR",
            "broker: the broker refused user 'u' (...): check WXTOKEN_AMQP_URL; "
            "retrying every 15 s",
        )
    ]


def test_what_is_done_meanwhile_is_part_of_the_first_warning(
    caplog: pytest.LogCaptureFixture, clock: Clock
) -> None:
    """A best-effort writer says what it does while the dependency is away."""
    caplog.set_level(logging.INFO)
    outage = OutageLog(
        logging.getLogger(LOGGER),
        "Redis (audit trail)",
        meanwhile="dropping entries until Redis answers",
        monotonic=clock,
    )
    outage.failed("ConnectionError: Connection refused.")
    outage.failed("ConnectionError: Connection refused.")
    clock.now_s += 3
    outage.succeeded()
    assert lines(caplog) == [
        (
            "WARNING",
            "Redis (audit trail) unreachable: ConnectionError: Connection refused.; "
            "dropping entries until Redis answers",
        ),
        ("INFO", "Redis (audit trail) available again after 3.0 s and 2 failed attempt(s)"),
    ]


def test_a_long_outage_is_reminded_by_time_not_by_attempts(
    caplog: pytest.LogCaptureFixture, clock: Clock
) -> None:
    """However many attempts fail, a reminder comes once `remind_every_s` has passed since
    the last WARNING, with the outage's length and attempts so far."""
    caplog.set_level(logging.WARNING)
    outage = OutageLog(logging.getLogger(LOGGER), "broker", remind_every_s=300, monotonic=clock)
    for _ in range(1000):  # many threads, or a fast retry loop: still no reminder
        outage.failed("connection closed")
    assert len(caplog.records) == 1
    clock.now_s += 300
    outage.failed("connection closed")
    clock.now_s += 299
    outage.failed("connection closed")
    clock.now_s += 1
    outage.failed("connection closed")
    assert lines(caplog) == [
        ("WARNING", "broker unreachable: connection closed"),
        ("WARNING", "broker still unreachable after 300 s and 1001 attempts: connection closed"),
        ("WARNING", "broker still unreachable after 600 s and 1003 attempts: connection closed"),
    ]


def test_every_attempt_is_at_debug_with_its_details(
    caplog: pytest.LogCaptureFixture, clock: Clock
) -> None:
    """DEBUG shows each attempt with the details and, for a retry loop, when it retries."""
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    outage = OutageLog(logging.getLogger(LOGGER), "broker", monotonic=clock)
    outage.failed("connection closed", 2.0, detail="StreamLostError: (104, 'reset')")
    outage.failed("connection closed")
    debug = [text for level, text in lines(caplog) if level == "DEBUG"]
    assert debug == [
        "broker unreachable (StreamLostError: (104, 'reset')); attempt 1, retrying in 2.0 s",
        "broker unreachable (connection closed); attempt 2",
    ]


def test_success_without_an_outage_logs_nothing_and_each_outage_starts_afresh(
    caplog: pytest.LogCaptureFixture, clock: Clock
) -> None:
    """Successes are silent; after an end, the next failure is a new outage's first WARNING,
    and a refused login already told is told again in the next outage."""
    caplog.set_level(logging.INFO)
    outage = OutageLog(logging.getLogger(LOGGER), "Redis (lease)", monotonic=clock)
    outage.succeeded()
    assert not outage.in_outage
    assert caplog.records == []
    refusal = "Redis refused the login of user 'u' (...)"
    outage.refused(refusal, 5.0)
    assert outage.in_outage
    outage.succeeded()
    outage.refused(refusal, 5.0)
    outage.succeeded()
    outage.failed("ConnectionError: refused")
    assert [level for level, _ in lines(caplog)] == ["ERROR", "INFO", "ERROR", "INFO", "WARNING"]


def test_many_threads_failing_at_once_log_one_start_and_one_end(
    caplog: pytest.LogCaptureFixture, clock: Clock
) -> None:
    """Best-effort writers report from many threads: still one WARNING and one INFO."""
    caplog.set_level(logging.INFO)
    outage = OutageLog(logging.getLogger(LOGGER), "Redis (audit trail)", monotonic=clock)
    start = threading.Barrier(8)

    def fail_many() -> None:
        start.wait()
        for _ in range(200):
            outage.failed("ConnectionError: refused")

    threads = [threading.Thread(target=fail_many) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    outage.succeeded()
    outage.succeeded()
    assert lines(caplog) == [
        ("WARNING", "Redis (audit trail) unreachable: ConnectionError: refused"),
        ("INFO", "Redis (audit trail) available again after 0.0 s and 1600 failed attempt(s)"),
    ]
