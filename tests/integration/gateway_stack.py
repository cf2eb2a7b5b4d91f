"""A running `wxtoken-gateway` child in front of a test's stack, with one key per role."""

from __future__ import annotations

import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from ops.gateway import add_key
from tests.waiting import wait_for

from .procs import Child
from .stack import Stack

#: name -> (app patterns, scopes, rate per second)
ROLES: dict[str, tuple[list[str], list[str], float | None]] = {
    "reader": (["wxe2e*"], ["read"], 10_000.0),
    "reporter": (["wxe2e*"], ["read", "report"], 10_000.0),
    "operator": (["wxe2e*"], ["read", "report", "override"], 10_000.0),
    "stranger": (["wxother*"], ["read", "report", "override"], 10_000.0),
    "slow": (["wxe2e*"], ["read"], 0.5),
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def write_keys(path: Path) -> dict[str, str]:
    return {
        name: add_key(path, name, apps=apps, scopes=scopes, rate_per_s=rate)
        for name, (apps, scopes, rate) in ROLES.items()
    }


def keys_files(tmp_path: Path) -> tuple[Path, Path]:
    """(the keys file on the "host", the same file as the gateway sees it): the gateway
    reads it through a link to its directory, as compose mounts the directory
    (deploy/secrets/gateway/ at /run/wxtoken/gateway), so a file replaced by rename shows."""
    host = tmp_path / "host-gateway-keys"
    mounted = tmp_path / "mounted-gateway-keys"
    host.mkdir(exist_ok=True)
    if not mounted.exists():
        mounted.symlink_to(host, target_is_directory=True)
    return host / "keys.json", mounted / "keys.json"


class GatewayProc(Child):
    """`python -m ops.gateway` on `port`."""

    def __init__(self, env: Mapping[str, str], log_path: Path) -> None:
        super().__init__([sys.executable, "-m", "ops.gateway"], env, log_path)


@dataclass
class RunningGateway:
    base_url: str
    keys: dict[str, str]
    proc: GatewayProc
    stack: Stack
    env: dict[str, str] = field(default_factory=dict)
    #: The keys file as the operator's `wxtoken gateway-key` writes it ("on the host"); the
    #: gateway reads it through a mounted directory (`WXTOKEN_GATEWAY_KEYS_FILE`).
    host_keys_file: Path = Path()

    @property
    def metrics_url(self) -> str:
        """The metrics listener (`WXTOKEN_GATEWAY_METRICS_PORT`, loopback), apart from the API."""
        return f"http://127.0.0.1:{self.env['WXTOKEN_GATEWAY_METRICS_PORT']}"

    def auth(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[role]}"}

    def get(self, path: str, role: str | None = "reader", **kw: object) -> httpx.Response:
        headers = {**(self.auth(role) if role else {}), **kw.pop("headers", {})}  # type: ignore[dict-item]
        return httpx.get(self.base_url + path, headers=headers, timeout=10, **kw)  # type: ignore[arg-type]

    def post(self, path: str, role: str | None = "operator", **kw: object) -> httpx.Response:
        headers = {**(self.auth(role) if role else {}), **kw.pop("headers", {})}  # type: ignore[dict-item]
        return httpx.post(self.base_url + path, headers=headers, timeout=10, **kw)  # type: ignore[arg-type]


def start_gateway(
    stack: Stack, tmp_path: Path, *, scheme: str = "http", **extra_env: str
) -> RunningGateway:
    keys_file, mounted_keys_file = keys_files(tmp_path)
    keys = write_keys(keys_file)
    port = free_port()
    env = {
        **stack.service_env,
        "WXTOKEN_GATEWAY_KEYS_FILE": str(mounted_keys_file),
        "WXTOKEN_GATEWAY_PORT": str(port),
        "WXTOKEN_GATEWAY_OPERATOR": "gateway-test",
        "WXTOKEN_GATEWAY_METRICS_PORT": str(free_port()),
        **extra_env,
    }
    proc = GatewayProc(env, tmp_path / f"gateway-{port}.log")
    stack.children.append(proc)
    return RunningGateway(f"{scheme}://127.0.0.1:{port}", keys, proc, stack, env, keys_file)


def wait_ready(gw: RunningGateway, **client_kw: object) -> None:
    def ready() -> bool:
        assert gw.proc.proc.poll() is None, gw.proc.stderr_text()
        try:
            return httpx.get(gw.base_url + "/readyz", timeout=2, **client_kw).status_code == 200  # type: ignore[arg-type]
        except httpx.HTTPError:
            return False

    wait_for(ready, timeout_s=30, message="the gateway to hold tokens")


@pytest.fixture
def gateway(stack: Stack, tmp_path: Path) -> RunningGateway:
    """The stack's producer running, the gateway started and holding its tokens."""
    stack.producer()
    for app_id in stack.app_ids:
        wait_for(lambda a=app_id: stack.snapshot(a), timeout_s=30, message=f"{app_id} stored")
    running = start_gateway(stack, tmp_path)
    wait_ready(running)
    wait_for(
        lambda: all(
            running.get(f"/v1/apps/{a}/access_token").status_code == 200 for a in stack.app_ids
        ),
        timeout_s=20,
        message="every app served",
    )
    return running


#: Where a relay's Redis and broker point: nowhere (it has neither).
NOWHERE_REDIS = "redis://127.0.0.1:1/0"
NOWHERE_AMQP = "amqp://guest:guest@127.0.0.1:1/%2F"


def start_relay(
    stack: Stack, tmp_path: Path, upstream_url: str, upstream_key: str
) -> RunningGateway:
    """A gateway fed by `upstream_url`'s stream (a relay), with no Redis and no broker."""
    relay_dir = tmp_path / "relay"
    relay_dir.mkdir()
    keys_file, mounted = keys_files(relay_dir)
    keys = write_keys(keys_file)
    port = free_port()
    env = {
        "WXTOKEN_REDIS_URL": NOWHERE_REDIS,
        "WXTOKEN_AMQP_URL": NOWHERE_AMQP,
        "WXTOKEN_VERIFY_KEYS": stack.service_env["WXTOKEN_VERIFY_KEYS"],
        "WXTOKEN_GATEWAY_KEYS_FILE": str(mounted),
        "WXTOKEN_GATEWAY_PORT": str(port),
        "WXTOKEN_GATEWAY_UPSTREAM_URL": upstream_url,
        "WXTOKEN_GATEWAY_UPSTREAM_API_KEY": upstream_key,
        "WXTOKEN_GATEWAY_UPSTREAM_READ_TIMEOUT_S": "3",
        "WXTOKEN_RECONNECT_MAX_S": "1",
        "WXTOKEN_GATEWAY_STREAM_HEARTBEAT_S": "0.5",
    }
    proc = GatewayProc(env, tmp_path / f"relay-{port}.log")
    stack.children.append(proc)
    return RunningGateway(f"http://127.0.0.1:{port}", keys, proc, stack, env, keys_file)
