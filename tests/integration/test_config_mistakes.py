"""Configuration mistakes against the real services are errors, not silent surprises:
a Redis URL whose database is not a number (issue 19, item 8), a wrong broker or Redis
password (item 9)."""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis

from tests.conftest import IN_CI
from tests.waiting import wait_for

from .procs import REPO_ROOT, wait_line
from .servers import RedisServer, free_port
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


def _rabbitmqctl(*args: str) -> None:
    ctl = shutil.which("rabbitmqctl")
    if ctl is None:
        message = "rabbitmqctl is not on PATH (needed to create the test's broker user)"
        if IN_CI:
            pytest.fail(f"{message}, and CI=true requires it")
        pytest.skip(message)
    done = subprocess.run(
        [ctl, "-q", *args], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr


@pytest.fixture
def broker_user(amqp_url: str) -> Iterator[tuple[str, str]]:
    """A broker user of the default vhost, (name, password); deleted afterwards."""
    name, password = f"wxtest-{uuid.uuid4().hex[:10]}", secrets.token_urlsafe(18)
    _rabbitmqctl("add_user", name, password)
    try:
        _rabbitmqctl("set_permissions", "-p", "/", name, ".*", ".*", ".*")
        yield name, password
    finally:
        _rabbitmqctl("delete_user", name)


def _status(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except urllib.error.URLError:
        return 0, ""  # not listening yet


def test_a_wrong_broker_password_is_a_configuration_error_until_fixed(
    tmp_path: Path, service_env: dict[str, str], broker_user: tuple[str, str]
) -> None:
    """With a password the broker refuses, the producer logs one ERROR naming the user and
    WXTOKEN_AMQP_URL (not an outage WARNING per attempt), /readyz is 503 with that reason,
    a gauge says 1; once the broker accepts the password, it connects without a restart."""
    user, password = broker_user
    wrong = secrets.token_urlsafe(18)
    real = urlsplit(service_env["WXTOKEN_AMQP_URL"])
    url = urlunsplit(real._replace(netloc=f"{user}:{wrong}@{real.hostname}:{real.port or 5672}"))
    port = free_port()
    stack = make_stack(tmp_path, service_env, app_count=1)
    try:
        producer = stack.producer(
            WXTOKEN_AMQP_URL=url, WXTOKEN_METRICS_PORT=str(port), WXTOKEN_LOG_LEVEL="INFO"
        )
        wait_line(
            producer,
            lambda line: "ERROR" in line and "refused" in line,
            timeout_s=30,
            message="an ERROR line about the refused login",
        )
        _, body = wait_for(
            lambda: (answer := _status(port, "/readyz"))[0] == 503 and answer,
            timeout_s=30,
            message="/readyz not ready",
        )
        reason = json.loads(body)["reason"]
        assert user in reason
        assert "WXTOKEN_AMQP_URL" in reason
        assert "wxtoken_producer_broker_login_refused 1.0" in _status(port, "/metrics")[1]
        # Both the publisher and the request listener are refused: one ERROR line each.
        wait_for(
            lambda: producer.stderr_text().count("retrying every") == 2,
            timeout_s=30,
            message="the listener's ERROR line too",
        )
        _rabbitmqctl("change_password", user, wrong)  # the broker side fixed
        wait_line(
            producer,
            lambda line: "broker available again" in line,
            timeout_s=60,
            message="the producer connecting once the password is accepted",
        )
        wait_for(
            lambda: _status(port, "/readyz")[0] == 200,
            timeout_s=30,
            message="/readyz ready once the login is accepted",
        )
        log = producer.stderr_text()
        errors = [line for line in log.splitlines() if " ERROR " in line]
        assert len(errors) == 2, errors
        for line in errors:
            assert f"user '{user}'" in line
            assert "WXTOKEN_AMQP_URL" in line
        assert wrong not in log
        assert password not in log
        assert not [line for line in log.splitlines() if "WARNING" in line and "broker" in line]
        assert producer.terminate() == 0
    finally:
        stack.close()


def test_a_wrong_redis_password_is_a_configuration_error_until_fixed(
    tmp_path: Path, service_env: dict[str, str]
) -> None:
    """Against a private Redis with an ACL user, a password it refuses (WRONGPASS) is one
    ERROR naming the user and WXTOKEN_REDIS_URL, /readyz 503 with that reason and a gauge
    at 1; once the user accepts that password (ACL SETUSER) the producer leads, unrestarted."""
    right, wrong = secrets.token_urlsafe(18), secrets.token_urlsafe(18)
    acl = tmp_path / "users.acl"
    acl.write_text(
        f"user default on nopass resetkeys -@all +ping\nuser wxtest-svc on >{right} ~* &* +@all\n"
    )
    port = free_port()
    with RedisServer(tmp_path, extra_args=["--aclfile", str(acl)]) as server:
        stack = make_stack(tmp_path, service_env, app_count=1)
        try:
            producer = stack.producer(
                WXTOKEN_REDIS_URL=f"redis://wxtest-svc:{wrong}@127.0.0.1:{server.port}/0",
                WXTOKEN_METRICS_PORT=str(port),
                WXTOKEN_LOG_LEVEL="INFO",
            )
            wait_line(
                producer,
                lambda line: "ERROR" in line and "Redis refused" in line,
                timeout_s=30,
                message="an ERROR line about the refused Redis login",
            )
            _, body = wait_for(
                lambda: (answer := _status(port, "/readyz"))[0] == 503 and answer,
                timeout_s=30,
                message="/readyz not ready",
            )
            reason = json.loads(body)["reason"]
            assert "'wxtest-svc'" in reason
            assert "WXTOKEN_REDIS_URL" in reason
            assert "wxtoken_producer_redis_login_refused 1.0" in _status(port, "/metrics")[1]
            admin = server.client(username="wxtest-svc", password=right)
            try:
                admin.execute_command("ACL", "SETUSER", "wxtest-svc", f">{wrong}")
            finally:
                admin.close()
            wait_for(
                lambda: _status(port, "/readyz")[0] == 200,
                timeout_s=60,
                message="/readyz ready once Redis accepts the password",
            )
            log = producer.stderr_text()
            errors = [line for line in log.splitlines() if " ERROR " in line]
            assert len(errors) == 1, errors
            assert "'wxtest-svc'" in errors[0]
            assert "WXTOKEN_REDIS_URL" in errors[0]
            assert right not in log
            assert wrong not in log
            assert producer.terminate() == 0
        finally:
            stack.close()
