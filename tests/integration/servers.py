"""Private `redis-server` and Redis Sentinel processes on free ports, for tests that break,
stop or fail over a server. Never the shared Redis on 6379: every server here belongs to
the test that started it, keeps its files in the test's `tmp_path`, and must be stopped
by it (use the object as a context manager, or call `stop()` in a fixture's teardown).

    with RedisServer(tmp_path).start() as server:
        client = redis.Redis.from_url(server.url)
        server.stop()            # SHUTDOWN NOSAVE ("Redis down")
        server.start()           # the same port again, empty ("Redis back")
        server.kill()            # SIGKILL: no goodbye

A server keeps its port across restarts, so clients configured with its URL reconnect.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.conftest import IN_CI
from tests.waiting import wait_for

HOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listened on a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def redis_server_binary() -> str:
    """The `redis-server` executable; skips (locally) or fails (under CI=true) without it."""
    found = shutil.which("redis-server")
    if found is None:
        message = "redis-server is not installed"
        if IN_CI:
            pytest.fail(f"{message}, and CI=true requires it")
        pytest.skip(message)
    return found


def _quick_client(port: int, **extra: Any) -> redis.Redis:
    """A client that gives up at once: for probing and managing a private server."""
    return redis.Redis(
        host=HOST,
        port=port,
        socket_timeout=2.0,
        socket_connect_timeout=0.5,
        retry=Retry(NoBackoff(), 0),
        **extra,
    )


class _ServerProcess:
    """One `redis-server` process (plain or sentinel) with its own directory and log."""

    #: Shown in log file names and error messages.
    kind = "redis"

    def __init__(self, tmp_path: Path, *, port: int | None = None, name: str | None = None):
        self.port = port if port is not None else free_port()
        self.name = name or f"{self.kind}-{self.port}"
        self.dir = tmp_path / self.name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.dir / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def _args(self) -> list[str]:
        raise NotImplementedError

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def client(self, **extra: Any) -> redis.Redis:
        """A new client of this server (no retries, short timeouts); close it when done."""
        return _quick_client(self.port, **extra)

    def start(self, timeout_s: float = 10.0) -> Self:
        """Start the process and wait until it answers PING; fails with its log if not."""
        if self.running:
            return self
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [redis_server_binary(), *self._args()],
            cwd=self.dir,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for(self._answers, timeout_s=timeout_s, message=f"{self.name} to answer PING")
        except AssertionError as exc:
            self.kill()
            raise AssertionError(f"{exc}\n--- {self.log_path} ---\n{self.log_text()}") from None
        return self

    def _answers(self) -> bool:
        if not self.running:
            raise AssertionError(f"{self.name} exited with {self.proc and self.proc.returncode}")
        client = self.client()
        try:
            return bool(client.ping())
        except (redis.RedisError, OSError):
            return False
        finally:
            client.close()

    def stop(self, timeout_s: float = 10.0) -> None:
        """SHUTDOWN NOSAVE, else SIGTERM, else SIGKILL; idempotent."""
        if self.running:
            client = self.client()
            with contextlib.suppress(redis.RedisError, OSError):
                client.execute_command("SHUTDOWN", "NOSAVE")  # type: ignore[no-untyped-call]
            client.close()
            self._reap(timeout_s, signal.SIGTERM)
        self._closed()

    def kill(self) -> None:
        """SIGKILL: the server vanishes without a word, as in a crash or power loss."""
        if self.running:
            self._reap(0, signal.SIGKILL)
        self._closed()

    def _reap(self, timeout_s: float, then: signal.Signals) -> None:
        assert self.proc is not None
        try:
            self.proc.wait(timeout_s)
            return
        except subprocess.TimeoutExpired:
            self.proc.send_signal(then)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def _closed(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class RedisServer(_ServerProcess):
    """A private, empty, non-persistent Redis on 127.0.0.1 (`extra_args` are appended, e.g.
    `("--replicaof", "127.0.0.1", str(master.port))`)."""

    def __init__(
        self,
        tmp_path: Path,
        port: int | None = None,
        extra_args: Sequence[str] = (),
        *,
        name: str | None = None,
    ) -> None:
        super().__init__(tmp_path, port=port, name=name)
        self.extra_args = list(extra_args)

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def _args(self) -> list[str]:
        return [
            "--save",
            "",
            "--appendonly",
            "no",
            "--bind",
            HOST,
            "--port",
            str(self.port),
            "--dir",
            str(self.dir),
            *self.extra_args,
        ]

    def replica_in_sync(self) -> bool:
        """True on a replica whose link to its master is up."""
        client = self.client()
        try:
            info = client.info("replication")
        except (redis.RedisError, OSError):
            return False
        finally:
            client.close()
        return info.get("role") == "slave" and info.get("master_link_status") == "up"


class SentinelServer(_ServerProcess):
    """A Redis Sentinel (`redis-server sentinel.conf --sentinel`) monitoring one master."""

    kind = "sentinel"

    def __init__(
        self,
        tmp_path: Path,
        master_port: int,
        *,
        service: str = "wxm",
        port: int | None = None,
        quorum: int = 1,
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 3000,
        name: str | None = None,
    ) -> None:
        super().__init__(tmp_path, port=port, name=name)
        self.service = service
        self.conf_path = self.dir / "sentinel.conf"
        # Sentinel rewrites its configuration file, so it is written once, here.
        self.conf_path.write_text(
            f"port {self.port}\n"
            f"bind {HOST}\n"
            f"dir {self.dir}\n"
            f"sentinel monitor {service} {HOST} {master_port} {quorum}\n"
            f"sentinel down-after-milliseconds {service} {down_after_ms}\n"
            f"sentinel failover-timeout {service} {failover_timeout_ms}\n"
        )

    def url(self, *, db: int = 0, scheme: str = "redis+sentinel") -> str:
        """The `redis+sentinel://` URL of the monitored service's master."""
        return f"{scheme}://{HOST}:{self.port}/{self.service}/{db}"

    def _args(self) -> list[str]:
        return [str(self.conf_path), "--sentinel"]

    def master_address(self) -> tuple[str, int] | None:
        """What this sentinel names as the master now (`SENTINEL get-master-addr-by-name`)."""
        client = self.client(decode_responses=True)
        try:
            reply = client.execute_command(  # type: ignore[no-untyped-call]
                "SENTINEL", "get-master-addr-by-name", self.service
            )
        except (redis.RedisError, OSError):
            return None
        finally:
            client.close()
        if not reply:
            return None
        host, port = reply
        return str(host), int(port)

    def knows_replica(self, port: int) -> bool:
        """True once the sentinel lists a healthy replica on `port` (it can fail over)."""
        client = self.client(decode_responses=True)
        try:
            replicas = client.execute_command(  # type: ignore[no-untyped-call]
                "SENTINEL", "replicas", self.service
            )
        except (redis.RedisError, OSError):
            return False
        finally:
            client.close()
        for fields in replicas:  # redis-py parses each into a dict of strings
            flags = str(fields.get("flags", "")).split(",")
            if int(fields.get("port", 0)) == port and flags == ["slave"]:
                return bool(fields.get("master-link-status") == "ok")
        return False
