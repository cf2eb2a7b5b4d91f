"""Configuration mistakes against the real services are errors, not silent surprises:
a Redis URL whose database is not a number (issue 19, item 8)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import redis

from .procs import REPO_ROOT
from .stack import make_stack


def test_a_redis_url_with_a_database_that_is_not_a_number_stops_the_producer(
    tmp_path: Path, service_env: dict[str, str]
) -> None:
    """`.../notadb` (redis-py would write into database 0) stops the producer at start with
    one line naming WXTOKEN_REDIS_URL, and nothing is written into database 0."""
    stack = make_stack(tmp_path, service_env, app_count=1)
    try:
        real = urlsplit(service_env["WXTOKEN_REDIS_URL"])
        notadb = urlunsplit(real._replace(path="/notadb"))
        env = {**service_env, **stack.producer_env, "WXTOKEN_REDIS_URL": notadb}
        done = subprocess.run(
            [sys.executable, "-m", "producer"],
            cwd=REPO_ROOT,
            env={**_inherited(), **env},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2, done.stderr[-2000:]
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, lines
        assert "WXTOKEN_REDIS_URL" in lines[0]
        assert "database number" in lines[0]
        db0 = redis.Redis.from_url(urlunsplit(real._replace(path="/0")))
        try:
            prefix = service_env["WXTOKEN_KEY_PREFIX"]
            assert list(db0.scan_iter(match=f"{prefix}:*")) == []
        finally:
            db0.close()
    finally:
        stack.close()


def _inherited() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.upper().startswith("WXTOKEN_")}
