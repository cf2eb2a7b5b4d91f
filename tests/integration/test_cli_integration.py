"""The real `wxtoken` console script against the local Redis and RabbitMQ, and the sandbox."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import pika
import pytest
import requests

from consumer_lib import ClientSettings, TokenClient, TokenSource, TokenUnavailable, mask
from consumer_lib.amqp import declare_exchange
from tests.waiting import wait_for

APP = "wxcli0000000001"
TOKEN = "CLI_override_token_0123456789abcdefghijklmnopqrstuvwxyz"
SCRIPT = Path(sys.executable).with_name("wxtoken")
COMMAND = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "ops.cli"]


@pytest.fixture
def env(service_env: dict[str, str]) -> dict[str, str]:
    return {**os.environ, **service_env}


@pytest.fixture
def exchange(amqp_url: str, isolation: dict[str, str]) -> str:
    """The test's exchange, declared up front (subscribers only declare it passively)."""
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        declare_exchange(connection.channel(), isolation["exchange"])
    finally:
        connection.close()
    return isolation["exchange"]


@pytest.fixture
def client(
    redis_url: str,
    amqp_url: str,
    isolation: dict[str, str],
    exchange: str,
    signing_keys: tuple[Path, Path],
) -> Iterator[TokenClient]:
    settings = ClientSettings(
        verify_keys=str(signing_keys[1]),
        redis_url=redis_url,
        amqp_url=amqp_url,
        exchange=exchange,
        key_prefix=isolation["key_prefix"],
    )
    with TokenClient(settings) as token_client:
        assert token_client.wait_connected(10), "client never subscribed"
        yield token_client


def wxtoken(
    *args: str, env: dict[str, str], stdin: str | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*COMMAND, *args],
        input=stdin,
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def set_token(env: dict[str, str], *extra: str) -> int:
    """`wxtoken set APP` with TOKEN piped in; returns the version it printed."""
    done = wxtoken("set", APP, "--expires-in", "600", *extra, env=env, stdin=TOKEN + "\n")
    assert done.returncode == 0, done.stderr
    assert TOKEN not in done.stdout + done.stderr
    return int(done.stdout.strip().splitlines()[-1].rsplit(" ", 1)[-1])


class Lines:
    """Collects a child's output lines in a thread, so a test can wait on them."""

    def __init__(self, stream: IO[str]) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.append(line.rstrip("\n"))

    def find(self, text: str) -> str | None:
        return next((line for line in list(self.lines) if text in line), None)

    def join(self, timeout_s: float = 5.0) -> None:
        self._thread.join(timeout_s)


@contextmanager
def spawn(*args: str, env: dict[str, str]) -> Iterator[tuple[subprocess.Popen[str], Lines, Lines]]:
    """Start `wxtoken ARGS`; always stopped (and its pipes drained) when the block ends."""
    with subprocess.Popen(
        [*COMMAND, *args],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stdout is not None
        assert proc.stderr is not None
        out, err = Lines(proc.stdout), Lines(proc.stderr)
        try:
            yield proc, out, err
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
            out.join()
            err.join()


def test_set_reaches_a_running_client(env: dict[str, str], client: TokenClient) -> None:
    """A token piped into `wxtoken set` is what a subscribed TokenClient hands out next."""
    version = set_token(env, "--allow-new-app", "--reason", "integration")

    def current() -> str | None:
        try:
            return client.get_token(APP, timeout=0.05)
        except TokenUnavailable:
            return None

    assert wait_for(current, timeout_s=10, message="the override at the client") == TOKEN
    update = client.get(APP)
    assert update.source == TokenSource.OVERRIDE
    assert update.version == version
    assert update.reason == "integration"


@pytest.mark.usefixtures("exchange")
def test_get_and_status_show_the_override_masked(env: dict[str, str]) -> None:
    """After `set`, `get` and `status --json` show it with the token masked; --reveal shows it."""
    version = set_token(env, "--allow-new-app")

    shown = wxtoken("get", APP, env=env)
    assert shown.returncode == 0, shown.stderr
    assert mask(TOKEN) in shown.stdout
    assert TOKEN not in shown.stdout
    assert str(version) in shown.stdout

    status = wxtoken("status", "--json", env=env)
    assert status.returncode == 3, status.stderr  # no producer holds the lease
    assert TOKEN not in status.stdout
    [record] = json.loads(status.stdout)
    assert (record["app_id"], record["state"], record["version"]) == (APP, "ok", version)
    assert record["source"] == "override"

    revealed = wxtoken("get", APP, "--json", "--reveal", env=env)
    assert json.loads(revealed.stdout)["value"] == TOKEN


@pytest.mark.usefixtures("exchange")
def test_set_refuses_an_app_redis_never_held(env: dict[str, str]) -> None:
    """Without --allow-new-app an unknown app is a usage error and nothing is stored."""
    done = wxtoken("set", APP, "--expires-in", "600", env=env, stdin=TOKEN)
    assert done.returncode == 2
    assert "--allow-new-app" in done.stderr
    assert wxtoken("get", APP, env=env).returncode == 1


def test_set_with_the_broker_unreachable_stores_nothing(env: dict[str, str]) -> None:
    """With RabbitMQ unreachable `set` exits 1 with one line and Redis stays untouched."""
    broken = {**env, "WXTOKEN_AMQP_URL": "amqp://guest:guest@127.0.0.1:1/%2F"}
    done = wxtoken("set", APP, "--expires-in", "600", "--allow-new-app", env=broken, stdin=TOKEN)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith("Error: cannot reach RabbitMQ")
    assert "Traceback" not in done.stderr
    missing = wxtoken("get", APP, env=env)
    assert missing.returncode == 1
    assert "no token stored" in missing.stderr


@pytest.mark.usefixtures("exchange")
def test_watch_prints_the_update_that_set_publishes(env: dict[str, str]) -> None:
    """`watch --count 1` prints the published override, masked, and exits 0."""
    with spawn("watch", "--count", "1", "--timeout", "20", env=env) as (proc, out, err):
        wait_for(lambda: err.find("watching"), timeout_s=15, message="watch to subscribe")
        version = set_token(env, "--allow-new-app")
        assert proc.wait(20) == 0, err.lines
        line = wait_for(lambda: out.find(APP), timeout_s=5, message="the watch line")
    assert f"v{version}" in line
    assert "override" in line
    assert mask(TOKEN) in line
    assert TOKEN not in "\n".join(out.lines + err.lines)


def test_watch_without_the_exchange_says_so(env: dict[str, str]) -> None:
    """`watch` before anything declared the exchange fails clearly with exit 1."""
    done = wxtoken("watch", "--timeout", "5", env=env)
    assert done.returncode == 1
    assert "does not exist yet" in done.stderr
    assert "Traceback" not in done.stderr


def test_sandbox_serves_tokens_and_stops_on_sigterm() -> None:
    """`sandbox --port 0` prints its URL, hands out a token, and exits 0 on SIGTERM."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WXTOKEN_SANDBOX_")}
    with spawn("sandbox", "--port", "0", env=env) as (proc, out, err):
        line = wait_for(lambda: out.find("sandbox listening on http://"), timeout_s=15)
        base_url = line.rsplit(" ", 1)[-1]
        reply = requests.get(
            f"{base_url}/cgi-bin/token",
            params={
                "grant_type": "client_credential",
                "appid": "wxdemo0000000001",
                "secret": "demo-secret-1",
            },
            timeout=5,
        )
        body = reply.json()
        assert body["expires_in"] == 7200
        assert body["access_token"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0, err.lines


def test_sandbox_serves_wecom_agents_given_on_the_command_line() -> None:
    """`sandbox --wecom corp:agent:secret,...` serves each agent its own token."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WXTOKEN_SANDBOX_")}
    agents = "ww_corp:1000002:agent-2,ww_corp:1000003:agent-3"
    with spawn("sandbox", "--port", "0", "--wecom", agents, env=env) as (proc, out, err):
        line = wait_for(lambda: out.find("sandbox listening on http://"), timeout_s=15)
        base_url = line.rsplit(" ", 1)[-1]
        tokens = [
            requests.get(
                f"{base_url}/cgi-bin/gettoken",
                params={"corpid": "ww_corp", "corpsecret": secret},
                timeout=5,
            ).json()["access_token"]
            for secret in ("agent-2", "agent-3")
        ]
        assert tokens[0] != tokens[1]
        wrong = requests.get(
            f"{base_url}/cgi-bin/gettoken",
            params={"corpid": "ww_corp", "corpsecret": "nope"},
            timeout=5,
        ).json()
        assert wrong["errcode"] == 40001
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0, err.lines


@pytest.fixture
def sigint_as_in_a_terminal() -> Iterator[None]:
    """Children get SIGINT's default handling, as a command typed in a terminal does.

    A test run started in the background by a non-interactive shell (`pytest &`, nohup)
    inherits SIGINT ignored, and so would `wxtoken`: Ctrl-C could not be tested there.
    """
    before = signal.getsignal(signal.SIGINT)
    if before == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


@pytest.mark.usefixtures("exchange", "sigint_as_in_a_terminal")
def test_watch_stops_on_ctrl_c_without_a_traceback(env: dict[str, str]) -> None:
    """Ctrl-C (SIGINT) ends an open-ended `watch` with exit 0 and no traceback."""
    with spawn("watch", env=env) as (proc, _out, err):
        wait_for(lambda: err.find("watching"), timeout_s=15, message="watch to subscribe")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(15) == 0, err.lines
    assert not any("Traceback" in line for line in err.lines)
