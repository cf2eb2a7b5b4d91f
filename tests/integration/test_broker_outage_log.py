"""A broker cut is logged in words, once when it starts and once when it ends (issue 19,
item 14), not once per reconnect attempt with pika's internals."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from .procs import Producer, wait_line
from .stack import make_stack
from .tcp_proxy import proxy_to

_OURS = re.compile(r" (WARNING|ERROR) (producer\.[\w.]+): (.*)$")


def _attempts(producer: Producer, what: str) -> int:
    """The highest reconnect attempt the DEBUG lines of `what` ("broker", ...) counted."""
    found = re.findall(
        rf"{re.escape(what)} unreachable \(.*\); attempt (\d+),", producer.stderr_text()
    )
    return max((int(n) for n in found), default=0)


def test_a_broker_cut_is_one_line_when_it_starts_and_one_when_it_ends(
    tmp_path: Path, service_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """The TCP proxy cuts the producer's broker connections; while both the publisher and
    the request listener retry (at least five attempts each), each logs one WARNING in
    words ("broker unreachable: connection closed"), and one INFO with the outage's length
    once the proxy is restored. No WARNING carries pika's exception names."""
    stack = make_stack(tmp_path, service_env, app_count=1)
    amqp = urlsplit(service_env["WXTOKEN_AMQP_URL"])
    try:
        with proxy_to(amqp.hostname or "127.0.0.1", amqp.port or 5672) as proxy:
            userinfo = amqp.netloc.rpartition("@")[0]
            via = urlunsplit(amqp._replace(netloc=f"{userinfo}@127.0.0.1:{proxy.port}"))
            producer = stack.producer(WXTOKEN_AMQP_URL=via, WXTOKEN_LOG_LEVEL="DEBUG")
            for started in ("publisher connected", "listening for refresh requests"):
                wait_line(
                    producer,
                    lambda line, started=started: started in line,
                    timeout_s=30,
                    message=started,
                )
            proxy.cut()
            wait_line(
                producer,
                lambda line: "broker unreachable" in line,
                timeout_s=30,
                message="the outage noticed",
            )
            for what in ("broker", "broker (refresh requests)"):
                wait_line(
                    producer,
                    lambda line, what=what: (
                        f"{what} unreachable (" in line and _attempts(producer, what) >= 5
                    ),
                    timeout_s=60,
                    message=f"five reconnect attempts of {what}",
                )
            attempts = {w: _attempts(producer, w) for w in ("broker", "broker (refresh requests)")}
            proxy.restore()
            for what in ("broker", "broker (refresh requests)"):
                wait_line(
                    producer,
                    lambda line, what=what: f"{what} available again after" in line,
                    timeout_s=60,
                    message=f"{what} back",
                )
            # Read before the proxy closes: that is another outage.
            log = producer.stderr_text().splitlines()
        lines = [m.groups() for m in map(_OURS.search, log) if m]
        about_broker = [(level, logger, text) for level, logger, text in lines if "broker" in text]
        ended = [line for line in log if "available again" in line]
        with capsys.disabled():
            print(f"\n[broker cut] attempts while cut {attempts}; WARNING/ERROR lines:")
            for level, logger, text in about_broker:
                print(f"  {level} {logger}: {text}")
            for line in ended:
                print(f"  {line.split(' ', 2)[2]}")
        assert sorted(text for _, _, text in about_broker) == [
            "broker (refresh requests) unreachable: connection closed",
            "broker unreachable: connection closed",
        ]
        assert len(ended) == 2
        assert producer.terminate() == 0
    finally:
        stack.close()
