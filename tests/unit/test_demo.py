"""`make demo`'s pre-flight: it finds every endpoint and says how to start what is down."""

from __future__ import annotations

import pytest

from ops.demo import endpoints, main


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://127.0.0.1:6379/0", [("127.0.0.1", 6379)]),
        ("redis+sentinel://s1:26380,s2/wxm", [("s1", 26380), ("s2", 26379)]),
        ("amqp://u:p@mq1:5673/%2F,amqps://u:p@mq2/%2F", [("mq1", 5673), ("mq2", 5671)]),
    ],
)
def test_endpoints_of_every_url_form(url: str, expected: list[tuple[str, int]]) -> None:
    """Plain, sentinel and multi-broker URLs all yield their host:port pairs."""
    assert endpoints(url) == expected


def test_demo_says_how_to_start_an_unreachable_redis(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: object
) -> None:
    """With nothing listening where Redis should be, the demo exits 1 and says what to run."""
    monkeypatch.chdir(str(tmp_path))
    monkeypatch.setenv("WXTOKEN_REDIS_URL", "redis://127.0.0.1:1/0")
    monkeypatch.setenv("WXTOKEN_AMQP_URL", "amqp://guest:guest@127.0.0.1:1/%2F")
    assert main([]) == 1
    err = capsys.readouterr().err
    assert "Redis is not reachable" in err
    assert "redis-server" in err
    assert "rabbitmq-server" in err
