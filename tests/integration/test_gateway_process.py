"""The gateway as a process: Ctrl-C (a real SIGINT) stops it cleanly, and a port in use is
one line and a non-zero exit before anything starts."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from ops.gateway import add_key
from tests.waiting import wait_for

from .gateway_stack import free_port
from .procs import REPO_ROOT


def _default_sigint() -> None:
    """As in a terminal: SIGINT is not ignored (a background shell job would ignore it)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture
def gateway_env(service_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    keys = tmp_path / "keys.json"
    add_key(keys, "reader", apps=["wx*"], scopes=["read"])
    return {**service_env, "WXTOKEN_GATEWAY_KEYS_FILE": str(keys)}


def _spawn(env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "ops.gateway"],
            cwd=REPO_ROOT,
            env={**os.environ, **env, "WXTOKEN_GATEWAY_PORT": str(port)},
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=_default_sigint,
        )


def test_sigint_stops_the_gateway_cleanly(gateway_env: dict[str, str], tmp_path: Path) -> None:
    """SIGINT after start-up: a graceful shutdown, exit 0, no KeyboardInterrupt traceback."""
    log = tmp_path / "gateway.log"
    proc = _spawn(gateway_env, free_port(), log)
    try:
        wait_for(
            lambda: "Application startup complete" in log.read_text(),
            timeout_s=30,
            message="the gateway to start",
        )
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    text = log.read_text()
    assert "Traceback" not in text
    assert "KeyboardInterrupt" not in text
    assert "Application shutdown complete" in text


def test_a_port_in_use_is_one_line_and_nothing_starts(
    gateway_env: dict[str, str], tmp_path: Path
) -> None:
    """Another process listens on the port: one line naming it and the variables, exit 1,
    and no line saying the gateway runs."""
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        log = tmp_path / "gateway.log"
        proc = _spawn(gateway_env, port, log)
        try:
            code = proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    text = log.read_text()
    assert code == 1, text
    [line] = [line for line in text.splitlines() if str(port) in line]
    assert line.startswith(f"wxtoken-gateway: cannot listen on 127.0.0.1:{port}")
    assert "WXTOKEN_GATEWAY_PORT" in line
    assert "gateway on" not in text
    assert "startup" not in text
    assert "Traceback" not in text
