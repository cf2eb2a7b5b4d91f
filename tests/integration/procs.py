"""Running the real programs as child processes, and reading what they report."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from tests.waiting import wait_for

REPO_ROOT = Path(__file__).resolve().parents[2]


class Child:
    """A child process whose stdout lines are collected by a reader thread."""

    def __init__(self, args: list[str], env: Mapping[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = log_path.open("w")
        self.proc = subprocess.Popen(
            args,
            cwd=REPO_ROOT,
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def stderr_text(self) -> str:
        self._log.flush()
        return self.log_path.read_text()

    def kill(self) -> None:
        """SIGKILL: no goodbye, no lease release, nothing flushed."""
        self.proc.kill()
        self.proc.wait(10)

    def terminate(self, timeout_s: float = 10.0) -> int:
        """SIGTERM and wait for the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._reader.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()


class Producer(Child):
    """`wxtoken-producer` (as `python -m producer`) with the given environment."""

    def __init__(self, env: Mapping[str, str], log_path: Path) -> None:
        super().__init__([sys.executable, "-m", "producer"], env, log_path)


class Subscriber(Child):
    """`tests.integration.subscriber_proc`: get_token() then a sandbox call, in a loop."""

    def __init__(
        self, env: Mapping[str, str], log_path: Path, base_url: str, app_ids: list[str]
    ) -> None:
        super().__init__(
            [sys.executable, "-m", "tests.integration.subscriber_proc", base_url, *app_ids],
            env,
            log_path,
        )

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        found = []
        for line in list(self.lines):
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if kind is None or event.get("event") == kind:
                found.append(event)
        return found

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        try:
            wait_for(lambda: self.events("ready"), timeout_s=timeout_s, message="subscriber ready")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.diagnose()}") from None

    def diagnose(self) -> str:
        """Ask the child to dump its threads' stacks (faulthandler), and return its log."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGUSR1)
            wait_for(
                lambda: "most recent call first" in self.stderr_text(),
                timeout_s=5,
                message="stack dump",
            )
        return f"--- {self.log_path} ---\n{self.stderr_text()[-6000:]}"

    def calls(self, app_id: str | None = None) -> list[dict[str, Any]]:
        return [e for e in self.events("call") if app_id is None or e["app"] == app_id]

    def bad_calls(self) -> list[dict[str, Any]]:
        return [e for e in self.events("call") if e["errcode"] != 0]

    def wait_calls(
        self, app_id: str, count: int, *, after_version: int = 0, timeout_s: float = 30.0
    ) -> None:
        wait_for(
            lambda: len([c for c in self.calls(app_id) if c["version"] > after_version]) >= count,
            timeout_s=timeout_s,
            message=f"{count} calls for {app_id} by a subscriber (stderr: {self.log_path})",
        )


def wait_line(
    child: Child, predicate: Callable[[str], bool], *, timeout_s: float, message: str
) -> None:
    """Wait until the child's stderr log has a line matching `predicate`."""
    wait_for(
        lambda: any(predicate(line) for line in child.stderr_text().splitlines()),
        timeout_s=timeout_s,
        message=message,
    )
