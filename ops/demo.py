"""`make demo`: the sandbox WeChat, a producer, a subscriber and the gateway, on this machine;
with PostgreSQL there, also a third-party platform and its receiver (`_demo_platform`).

The sandbox hands out 30-second tokens, so a refresh arrives about every 24 seconds. The
producer and the gateway run as their own processes (their log lines are prefixed
`producer |` and `gateway |`); the subscriber is a `TokenClient` in this process that
prints every token it is pushed and checks it with the sandbox, as a service would by
calling WeChat with it. The commands it suggests work when pasted: they read a `demo.env`
it writes (the demo's names, keys and the gateway's API key).

    python -m ops.demo [--duration SECONDS] [--expires-in SECONDS]
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import requests

from consumer_lib import (
    BrokerError,
    ClientSettings,
    ConfigError,
    TokenClient,
    TokenKind,
    TokenUpdate,
    mask,
)
from consumer_lib.amqp import Connection, connection_parameters
from consumer_lib.jssdk import jssdk_signature, new_nonce
from consumer_lib.settings import (
    is_sentinel_url,
    load_settings,
    parse_sentinel_url,
    split_urls,
)
from consumer_lib.wire.signing import generate_keypair
from producer.signals import STOP_SIGNALS, SignalInbox

from ._demo_children import free_port, say, start_child
from ._demo_platform import COMPONENT, DemoPlatform
from .gateway import add_key
from .sandbox import SandboxConfig, SandboxServer

JSAPI_LINE = 'tickets = ["jsapi"]\n'
DEMO_APPS = {"wxdemo0000000001": "demo-secret-1", "wxdemo0000000002": "demo-secret-2"}
DEMO_PREFIX = "wxdemo"
DEMO_EXCHANGE = "wxtoken.demo"
#: The app the pasted curl and the gateway's answer are about.
FIRST_APP = next(iter(DEMO_APPS))

HOW_TO_START = {
    "Redis": "redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save ''",
    "RabbitMQ": "rabbitmq-server -detached",
}


def endpoints(url: str) -> list[tuple[str, int]]:
    """The host:port pairs behind a settings URL (several brokers, or Redis sentinels)."""
    if is_sentinel_url(url):
        return list(parse_sentinel_url(url).sentinels)
    found = []
    for one in split_urls(url):
        parts = urlsplit(one)
        default_port = {"amqps": 5671, "amqp": 5672}.get(parts.scheme, 6379)
        found.append((parts.hostname or "127.0.0.1", parts.port or default_port))
    return found


def reachable(url: str) -> bool:
    """True when any of the URL's endpoints accepts a TCP connection."""
    if urlsplit(url).scheme == "unix":
        return True  # a socket path; the client will say if it is wrong
    for host, port in endpoints(url):
        try:
            with socket.create_connection((host, port), 2.0):
                return True
        except OSError:
            continue
    return False


def write_env_file(path: Path, env: Mapping[str, str]) -> Path:
    """`KEY='value'` lines a shell can source (`set -a; . FILE; set +a`); mode 0600."""
    path.write_text("".join(f"{k}={shlex.quote(v)}\n" for k, v in sorted(env.items())))
    path.chmod(0o600)
    return path


def declare_exchanges(settings: ClientSettings) -> None:
    """Create the tokens and requests exchanges, so the subscriber starting before the
    producer finds them (no NOT_FOUND from the broker); `BrokerError` if unreachable."""
    params = connection_parameters(settings.amqp_url, connection_name="wxtoken-demo/setup")
    connection = Connection.open(params, what="cannot reach RabbitMQ")
    try:
        channel = connection.channel()
        channel.declare_exchange(settings.exchange)
        channel.declare_requests_exchange(settings.exchange)
    finally:
        connection.close()


def wait_until(check: Callable[[], bool], timeout_s: float, stop: threading.Event) -> bool:
    """Poll `check` every 0.2 s until it is true, `stop` is set or `timeout_s` passes."""
    deadline = time.monotonic() + timeout_s
    while not stop.is_set() and time.monotonic() < deadline:
        try:
            if check():
                return True
        except OSError:
            pass
        stop.wait(0.2)
    return False


#: The H5 page the demo signs a `wx.config` for with the jsapi ticket.
DEMO_PAGE_URL = "https://h5.example.com/pay?order=42"


def ticket_line(update: TokenUpdate, sandbox: SandboxServer, *, now_s: float) -> str:
    """What the subscriber says of a jsapi ticket: it, and a JS-SDK signature made with it
    for `DEMO_PAGE_URL`, checked by the sandbox as WeChat checks `wx.config`."""
    nonce, timestamp = new_nonce(), int(now_s)
    signature = jssdk_signature(update.value, nonce, timestamp, DEMO_PAGE_URL)
    valid = sandbox.state.verify_signature(
        update.app_id, "jsapi", DEMO_PAGE_URL, nonce, str(timestamp), signature
    )
    return (
        f"{update.app_id} {update.kind} v{update.version} {update.masked}, "
        f"{update.seconds_left(now_s):.1f} s left; JS-SDK signature {signature[:12]}... "
        f"for {DEMO_PAGE_URL}: {'valid' if valid else 'INVALID'}"
    )


def lease_ttl_for(expires_in_s: int) -> float:
    """A lease short enough that a takeover fits in the refresh margin (no warning)."""
    margin_s = min(0.2 * expires_in_s, 300.0)
    return max(1.0, min(10.0, round(margin_s * 2 / 3, 1)))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Watch wxtoken refresh tokens end to end.")
    parser.add_argument("--duration", type=float, default=0, help="stop after S seconds")
    parser.add_argument("--expires-in", type=int, default=30, help="sandbox token lifetime, s")
    parser.add_argument("--key-prefix", default=DEMO_PREFIX, help=argparse.SUPPRESS)
    parser.add_argument("--exchange", default=DEMO_EXCHANGE, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.expires_in < 10:
        parser.error("--expires-in must be at least 10 seconds")
    return args


def configure_logging() -> None:
    """This process's warnings as `subscriber |` lines; none of pika's."""
    logging.basicConfig(
        level=logging.WARNING,
        format="%(asctime)s subscriber | %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    # pika's own account of a connection problem is transport detail; we say it in a line.
    logging.getLogger("pika").setLevel(logging.CRITICAL)


class DemoAborted(Exception):
    """The demo cannot start; it has said why on stderr. `exit_code` is main's answer."""

    def __init__(self, exit_code: int) -> None:
        super().__init__(exit_code)
        self.exit_code = exit_code


def preflight(args: argparse.Namespace, public_key: Path) -> ClientSettings:
    """The subscriber's settings, once Redis and RabbitMQ answer and the exchanges exist.

    `DemoAborted` after saying why: 2 for a configuration error, 1 for a service down."""
    try:
        settings = load_settings(
            ClientSettings,
            key_prefix=args.key_prefix,
            exchange=args.exchange,
            verify_keys=str(public_key),
            signing_key_file=None,
            insecure_accept_unsigned=False,
        )
    except ConfigError as exc:
        print(f"demo: configuration error: {exc}", file=sys.stderr)
        raise DemoAborted(2) from exc
    missing = [
        name
        for name, url in (("Redis", settings.redis_url), ("RabbitMQ", settings.amqp_url))
        if not reachable(url)
    ]
    for name in missing:
        print(
            f"demo: {name} is not reachable. Start it with:\n    {HOW_TO_START[name]}",
            file=sys.stderr,
        )
    if missing:
        raise DemoAborted(1)
    try:
        declare_exchanges(settings)
    except BrokerError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        raise DemoAborted(1) from exc
    return settings


def write_apps_file(workdir: Path) -> Path:
    """The producer's apps: the first on the stable token API, the second on the classic."""
    apps_file = workdir / "apps.toml"
    apps_file.write_text(
        "".join(
            f'[[apps]]\napp_id = "{app}"\nsecret_env = "WXDEMO_SECRET_{n}"\n'
            f'token_api = "{"stable" if n == 1 else "classic"}"\n'
            # The first app keeps a jsapi ticket: the subscriber signs a wx.config with it.
            + (JSAPI_LINE if n == 1 else "")
            + "\n"
            for n, app in enumerate(DEMO_APPS, 1)
        )
    )
    return apps_file


def platform_if_available(workdir: Path) -> DemoPlatform | None:
    """The third-party platform, or None after saying why the demo runs without one."""
    platform = DemoPlatform(workdir)
    without = platform.unavailable()
    if without is None:
        return platform
    say("demo", f"no third-party platform in this demo: {without}")
    return None


def start_sandbox(expires_in_s: int, platform: DemoPlatform | None) -> SandboxServer:
    """The stand-in WeChat, handing out `expires_in_s`-second tokens."""
    sandbox = SandboxServer(
        SandboxConfig(
            apps=DEMO_APPS,
            expires_in_s=expires_in_s,
            overlap_s=max(5.0, expires_in_s / 3),
            platforms=[] if platform is None else [platform.sandbox_platform()],
        )
    ).start()
    say("sandbox", f"WeChat stand-in on {sandbox.base_url}, {expires_in_s}-second tokens")
    return sandbox


@dataclass(frozen=True)
class DemoKeys:
    """The throwaway key pair: the producer signs every token, the subscriber verifies it."""

    private: Path
    public: Path


@dataclass(frozen=True)
class Ports:
    """Where the children listen: the producer's metrics, the gateway, the gateway's metrics."""

    metrics: int
    gateway: int
    gateway_metrics: int

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.gateway}"


@dataclass(frozen=True)
class Wiring:
    """What the producer and the gateway start with, and what the pasted commands use."""

    producer_env: dict[str, str]
    gateway_env: dict[str, str]
    ports: Ports
    env_file: Path
    api_key: str


def shared_env(
    args: argparse.Namespace, settings: ClientSettings, keys: DemoKeys
) -> dict[str, str]:
    """The settings every child and every pasted command shares with the subscriber."""
    return {
        "WXTOKEN_REDIS_URL": settings.redis_url,
        "WXTOKEN_AMQP_URL": settings.amqp_url,
        "WXTOKEN_KEY_PREFIX": args.key_prefix,
        "WXTOKEN_EXCHANGE": args.exchange,
        "WXTOKEN_VERIFY_KEYS": str(keys.public),
    }


def producer_env(
    shared: Mapping[str, str],
    *,
    sandbox_url: str,
    apps_file: Path,
    keys: DemoKeys,
    metrics_port: int,
    expires_in_s: int,
) -> dict[str, str]:
    """The producer's environment: refreshing the demo's apps from the sandbox, signing."""
    return {
        **os.environ,
        **shared,
        "WXTOKEN_WECHAT_BASE_URL": sandbox_url,
        "WXTOKEN_APPS_FILE": str(apps_file),
        "WXTOKEN_REPUBLISH_INTERVAL_S": "10",
        "WXTOKEN_LEASE_TTL_S": str(lease_ttl_for(expires_in_s)),
        "WXTOKEN_SIGNING_KEY_FILE": str(keys.private),
        "WXTOKEN_METRICS_PORT": str(metrics_port),
        **{f"WXDEMO_SECRET_{n}": secret for n, secret in enumerate(DEMO_APPS.values(), 1)},
    }


def gateway_env(shared: Mapping[str, str], keys_file: Path, ports: Ports) -> dict[str, str]:
    """The gateway's environment: the demo's API keys, its ports, only its warnings."""
    return {
        **os.environ,
        **shared,
        "WXTOKEN_GATEWAY_KEYS_FILE": str(keys_file),
        "WXTOKEN_GATEWAY_PORT": str(ports.gateway),
        "WXTOKEN_GATEWAY_METRICS_PORT": str(ports.gateway_metrics),
        "WXTOKEN_LOG_LEVEL": "WARNING",
    }


def wire(
    args: argparse.Namespace,
    settings: ClientSettings,
    keys: DemoKeys,
    *,
    workdir: Path,
    apps_file: Path,
    sandbox: SandboxServer,
    platform: DemoPlatform | None,
) -> Wiring:
    """Start the platform (if any), give the gateway an API key and write `demo.env`."""
    shared = shared_env(args, settings, keys)
    ports = Ports(metrics=free_port(), gateway=free_port(), gateway_metrics=free_port())
    producer = producer_env(
        shared,
        sandbox_url=sandbox.base_url,
        apps_file=apps_file,
        keys=keys,
        metrics_port=ports.metrics,
        expires_in_s=args.expires_in,
    )
    if platform is not None:
        platform.start(sandbox.base_url, shared)
        producer.update(platform.env)
    keys_file = workdir / "gateway-keys.json"
    api_key = add_key(keys_file, "demo", apps=["wxdemo*"], scopes=["read", "report"])
    gateway = gateway_env(shared, keys_file, ports)
    env_file = write_env_file(
        workdir / "demo.env",
        {
            **shared,
            "WXTOKEN_SIGNING_KEY_FILE": str(keys.private),
            "WXTOKEN_GATEWAY_KEYS_FILE": str(keys_file),
            "WXDEMO_GATEWAY_KEY": api_key,
            **({} if platform is None else platform.env),
        },
    )
    return Wiring(producer, gateway, ports, env_file, api_key)


def say_what_to_paste(wiring: Wiring, *, with_platform: bool) -> None:
    """The commands to try in another shell, and where the metrics are."""
    wxtoken = Path(sys.executable).with_name("wxtoken")
    say("demo", "in another shell, paste:")
    say("demo", f"  set -a; . {wiring.env_file}; set +a")
    say("demo", f"  {wxtoken} status")
    say(
        "demo",
        f'  curl -s -H "Authorization: Bearer $WXDEMO_GATEWAY_KEY" '
        f"{wiring.ports.gateway_url}/v1/apps/{FIRST_APP}/access_token",
    )
    if with_platform:
        say("demo", f"  {wxtoken} platform status")
    say(
        "demo",
        f"metrics: http://127.0.0.1:{wiring.ports.gateway_metrics}/metrics (gateway), "
        f"http://127.0.0.1:{wiring.ports.metrics}/metrics (producer); Ctrl-C stops",
    )


class Subscriber:
    """What the demo's `TokenClient` does with a token: checks it with the sandbox as a
    service would by calling WeChat with it, and says so; and, once, the gateway's answer."""

    def __init__(self, sandbox: SandboxServer, wiring: Wiring, stop: threading.Event) -> None:
        self.sandbox = sandbox
        self.wiring = wiring
        self.stop = stop
        self.checker = requests.Session()
        self.checker.trust_env = False

    def on_update(self, update: TokenUpdate) -> None:
        if update.kind is TokenKind.JSAPI_TICKET:
            say("subscriber", ticket_line(update, self.sandbox, now_s=time.time()))
            return
        answer = self.checker.get(
            f"{self.sandbox.base_url}/cgi-bin/getcallbackip",
            params={"access_token": update.value},
            timeout=5,
        ).json()
        verdict = "accepted" if "errcode" not in answer else f"REJECTED {answer['errcode']}"
        if update.app_id == COMPONENT:
            verdict = "the platform's component token"  # not an API caller's token
        say(
            "subscriber",
            f"{update.app_id} v{update.version} ({update.source}) {update.masked}, "
            f"{update.seconds_left(time.time()):.1f} s left; WeChat: {verdict}",
        )

    def show_gateway(self) -> None:
        """Once the gateway answers the pasted curl, what it answers (in a thread)."""
        url = f"{self.wiring.ports.gateway_url}/v1/apps/{FIRST_APP}/access_token"
        headers = {"Authorization": f"Bearer {self.wiring.api_key}"}
        if not wait_until(
            lambda: self.checker.get(url, headers=headers, timeout=2).status_code == 200,
            30,
            self.stop,
        ):
            return
        body = self.checker.get(url, headers=headers, timeout=2).json()
        say(
            "gateway",
            f"curl above -> 200: v{body['version']} {mask(body['access_token'])}, "
            f"expires_in {body['expires_in']} s",
        )


@dataclass(frozen=True)
class Running:
    """The demo's parts once started; `close` stops them in this order after the
    subscriber: the gateway, the producer, the platform (and its receiver), the sandbox."""

    client: TokenClient
    producer: subprocess.Popen[str]
    gateway: subprocess.Popen[str]
    platform: DemoPlatform | None
    sandbox: SandboxServer
    stop: threading.Event  # the demo's own threads watch it

    def children(self) -> list[tuple[str, subprocess.Popen[str]]]:
        """The child processes the demo cannot go on without, by name."""
        children = [("producer", self.producer), ("gateway", self.gateway)]
        if self.platform is not None and self.platform.receiver is not None:
            children.append(("receiver", self.platform.receiver))
        return children

    def close(self) -> None:
        say("demo", "stopping")
        self.stop.set()
        self.client.close()
        for child in (self.gateway, self.producer):
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
                try:
                    child.wait(10)
                except subprocess.TimeoutExpired:
                    child.kill()
        if self.platform is not None:
            self.platform.close()
        self.sandbox.stop()


def run_until_stopped(
    inbox: SignalInbox,
    children: list[tuple[str, subprocess.Popen[str]]],
    *,
    started_s: float,
    duration_s: float,
) -> int:
    """0 on a stop signal or after `duration_s` (0: no limit) from `started_s` (monotonic);
    1, after saying so, when a child exits first."""
    while not inbox.wait(0.5):
        for name, child in children:
            if child.poll() is not None:
                say("demo", f"the {name} exited with code {child.returncode}")
                return 1
        if duration_s and time.monotonic() - started_s >= duration_s:
            break
    return 0


# The demo's script, read top to bottom: each step runs once, in the order it prints.
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging()
    workdir = Path(tempfile.mkdtemp(prefix="wxtoken-demo-"))
    keys = DemoKeys(*generate_keypair(workdir / "demo-signing.key"))
    try:
        settings = preflight(args, keys.public)
    except DemoAborted as exc:
        return exc.exit_code
    stop = threading.Event()  # the demo's own threads watch it too
    inbox = SignalInbox(STOP_SIGNALS)  # open for the rest of the demo's process
    apps_file = write_apps_file(workdir)
    platform = platform_if_available(workdir)
    sandbox = start_sandbox(args.expires_in, platform)
    wiring = wire(
        args,
        settings,
        keys,
        workdir=workdir,
        apps_file=apps_file,
        sandbox=sandbox,
        platform=platform,
    )
    say_what_to_paste(wiring, with_platform=platform is not None)
    producer = start_child("producer", wiring.producer_env, "producer")
    gateway = start_child("ops.gateway", wiring.gateway_env, "gateway")
    subscriber = Subscriber(sandbox, wiring, stop)
    client = TokenClient(settings, name="wxtoken-demo-subscriber")
    client.on_update(subscriber.on_update)
    threading.Thread(target=subscriber.show_gateway, daemon=True).start()
    started_s = time.monotonic()
    running = Running(client, producer, gateway, platform, sandbox, stop)
    children = running.children()
    if platform is not None:
        platform.authorize_later(sandbox.base_url, min(15.0, args.expires_in / 2), stop)
    try:
        client.start()
        return run_until_stopped(inbox, children, started_s=started_s, duration_s=args.duration)
    finally:
        running.close()


if __name__ == "__main__":
    sys.exit(main())
