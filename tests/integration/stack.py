"""A whole wxtoken deployment for one test: sandbox WeChat, apps file, environments."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pika
import pytest
import redis

from consumer_lib.snapshot import SnapshotReader
from consumer_lib.wire.keys import KeyLayout
from consumer_lib.wire.update import TokenUpdate
from ops._sandbox import SandboxConfig, SandboxServer
from producer.publishing import declare_exchange

from .procs import Child, Producer, Subscriber


@dataclass
class Stack:
    """The sandbox in this process; producers and subscribers as child processes."""

    sandbox: SandboxServer
    service_env: dict[str, str]
    apps: dict[str, str]
    apps_file: Path
    tmp_path: Path
    producer_env: dict[str, str] = field(default_factory=dict)
    children: list[Child] = field(default_factory=list)
    _count: Iterator[int] = field(default_factory=itertools.count)

    @property
    def app_ids(self) -> list[str]:
        return list(self.apps)

    def producer(self, **extra_env: str) -> Producer:
        env = {**self.service_env, **self.producer_env, **extra_env}
        child = Producer(env, self.tmp_path / f"producer-{next(self._count)}.log")
        self.children.append(child)
        return child

    def subscriber(self) -> Subscriber:
        child = Subscriber(
            self.service_env,
            self.tmp_path / f"subscriber-{next(self._count)}.log",
            self.sandbox.base_url,
            self.app_ids,
        )
        self.children.append(child)
        return child

    def snapshot(self, app_id: str) -> TokenUpdate | None:
        client = redis.Redis.from_url(self.service_env["WXTOKEN_REDIS_URL"])
        try:
            return SnapshotReader(client, KeyLayout(self.service_env["WXTOKEN_KEY_PREFIX"])).read(
                app_id
            )
        finally:
            client.close()

    def issued(self, app_id: str) -> int:
        """How many new tokens the sandbox has handed out for `app_id`."""
        issued = self.sandbox.state.stats()["issued"]
        assert isinstance(issued, dict)
        return int(issued.get(app_id, 0))

    def declare_exchange(self) -> None:
        """Subscribers only declare the exchange passively; a producer normally creates it."""
        connection = pika.BlockingConnection(
            pika.URLParameters(self.service_env["WXTOKEN_AMQP_URL"])
        )
        try:
            declare_exchange(connection.channel(), self.service_env["WXTOKEN_EXCHANGE"])
        finally:
            connection.close()

    def close(self) -> None:
        for child in self.children:
            child.close()
        self.sandbox.stop()


def make_stack(
    tmp_path: Path,
    service_env: dict[str, str],
    *,
    token_api: str = "classic",
    expires_in_s: int = 30,
    overlap_s: float = 10.0,
    app_count: int = 2,
) -> Stack:
    apps = {f"wxe2e{n:011d}": f"secret-{n}" for n in range(1, app_count + 1)}
    sandbox = SandboxServer(
        SandboxConfig(apps=apps, expires_in_s=expires_in_s, overlap_s=overlap_s)
    ).start()
    apps_file = tmp_path / "apps.toml"
    apps_file.write_text(
        "".join(
            f'[[apps]]\napp_id = "{app}"\nsecret_env = "E2E_SECRET_{n}"\n'
            f'token_api = "{token_api}"\n'
            for n, app in enumerate(apps, 1)
        )
    )
    producer_env = {
        "WXTOKEN_APPS_FILE": str(apps_file),
        "WXTOKEN_WECHAT_BASE_URL": sandbox.base_url,
        "WXTOKEN_RETRY_BASE_S": "0.2",
        "WXTOKEN_RETRY_CAP_S": "2",
        "WXTOKEN_REPUBLISH_INTERVAL_S": "5",
        # Short sandbox tokens leave a short refresh margin (20 % of 30 s is 6 s): a
        # takeover after a SIGKILL must fit inside it, so the lease is shorter still.
        "WXTOKEN_LEASE_TTL_S": "4",
        "WXTOKEN_LOG_LEVEL": "DEBUG",
        **{f"E2E_SECRET_{n}": secret for n, secret in enumerate(apps.values(), 1)},
    }
    return Stack(sandbox, service_env, apps, apps_file, tmp_path, producer_env)


@pytest.fixture
def stack(tmp_path: Path, service_env: dict[str, str]) -> Iterator[Stack]:
    built = make_stack(tmp_path, service_env)
    yield built
    built.close()
