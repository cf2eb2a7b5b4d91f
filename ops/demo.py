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


# The demo's script, read top to bottom: each step runs once, in the order it prints.
def main(argv: list[str] | None = None) -> int:  # noqa: C901, PLR0912, PLR0915
    parser = argparse.ArgumentParser(description="Watch wxtoken refresh tokens end to end.")
    parser.add_argument("--duration", type=float, default=0, help="stop after S seconds")
    parser.add_argument("--expires-in", type=int, default=30, help="sandbox token lifetime, s")
    parser.add_argument("--key-prefix", default=DEMO_PREFIX, help=argparse.SUPPRESS)
    parser.add_argument("--exchange", default=DEMO_EXCHANGE, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.expires_in < 10:
        parser.error("--expires-in must be at least 10 seconds")
    logging.basicConfig(
        level=logging.WARNING,
        format="%(asctime)s subscriber | %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    # pika's own account of a connection problem is transport detail; we say it in a line.
    logging.getLogger("pika").setLevel(logging.CRITICAL)

    workdir = Path(tempfile.mkdtemp(prefix="wxtoken-demo-"))
    # A throwaway key pair: the producer signs every token, the subscriber verifies it.
    private_key, public_key = generate_keypair(workdir / "demo-signing.key")
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
        return 2
    missing = [
        name
        for name, url in (("Redis", settings.redis_url), ("RabbitMQ", settings.amqp_url))
        if not reachable(url)
    ]
    if missing:
        for name in missing:
            print(
                f"demo: {name} is not reachable. Start it with:\n    {HOW_TO_START[name]}",
                file=sys.stderr,
            )
        return 1
    try:
        declare_exchanges(settings)
    except BrokerError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1

    stop = threading.Event()  # the demo's own threads watch it too
    inbox = SignalInbox(STOP_SIGNALS)  # open for the rest of the demo's process

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
    platform: DemoPlatform | None = DemoPlatform(workdir)
    assert platform is not None
    without = platform.unavailable()
    if without is not None:
        say("demo", f"no third-party platform in this demo: {without}")
        platform = None
    sandbox = SandboxServer(
        SandboxConfig(
            apps=DEMO_APPS,
            expires_in_s=args.expires_in,
            overlap_s=max(5.0, args.expires_in / 3),
            platforms=[] if platform is None else [platform.sandbox_platform()],
        )
    ).start()
    say("sandbox", f"WeChat stand-in on {sandbox.base_url}, {args.expires_in}-second tokens")

    shared = {
        "WXTOKEN_REDIS_URL": settings.redis_url,
        "WXTOKEN_AMQP_URL": settings.amqp_url,
        "WXTOKEN_KEY_PREFIX": args.key_prefix,
        "WXTOKEN_EXCHANGE": args.exchange,
        "WXTOKEN_VERIFY_KEYS": str(public_key),
    }
    metrics_port, gateway_port, gateway_metrics_port = free_port(), free_port(), free_port()
    producer_env = {
        **os.environ,
        **shared,
        "WXTOKEN_WECHAT_BASE_URL": sandbox.base_url,
        "WXTOKEN_APPS_FILE": str(apps_file),
        "WXTOKEN_REPUBLISH_INTERVAL_S": "10",
        "WXTOKEN_LEASE_TTL_S": str(lease_ttl_for(args.expires_in)),
        "WXTOKEN_SIGNING_KEY_FILE": str(private_key),
        "WXTOKEN_METRICS_PORT": str(metrics_port),
        **{f"WXDEMO_SECRET_{n}": secret for n, secret in enumerate(DEMO_APPS.values(), 1)},
    }
    if platform is not None:
        platform.start(sandbox.base_url, shared)
        producer_env.update(platform.env)
    keys_file = workdir / "gateway-keys.json"
    api_key = add_key(keys_file, "demo", apps=["wxdemo*"], scopes=["read", "report"])
    gateway_env = {
        **os.environ,
        **shared,
        "WXTOKEN_GATEWAY_KEYS_FILE": str(keys_file),
        "WXTOKEN_GATEWAY_PORT": str(gateway_port),
        "WXTOKEN_GATEWAY_METRICS_PORT": str(gateway_metrics_port),
        "WXTOKEN_LOG_LEVEL": "WARNING",
    }
    env_file = write_env_file(
        workdir / "demo.env",
        {
            **shared,
            "WXTOKEN_SIGNING_KEY_FILE": str(private_key),
            "WXTOKEN_GATEWAY_KEYS_FILE": str(keys_file),
            "WXDEMO_GATEWAY_KEY": api_key,
            **({} if platform is None else platform.env),
        },
    )
    gateway_url = f"http://127.0.0.1:{gateway_port}"
    first_app = next(iter(DEMO_APPS))
    wxtoken = Path(sys.executable).with_name("wxtoken")
    say("demo", "in another shell, paste:")
    say("demo", f"  set -a; . {env_file}; set +a")
    say("demo", f"  {wxtoken} status")
    say(
        "demo",
        f'  curl -s -H "Authorization: Bearer $WXDEMO_GATEWAY_KEY" '
        f"{gateway_url}/v1/apps/{first_app}/access_token",
    )
    if platform is not None:
        say("demo", f"  {wxtoken} platform status")
    say(
        "demo",
        f"metrics: http://127.0.0.1:{gateway_metrics_port}/metrics (gateway), "
        f"http://127.0.0.1:{metrics_port}/metrics (producer); Ctrl-C stops",
    )
    producer = start_child("producer", producer_env, "producer")
    gateway = start_child("ops.gateway", gateway_env, "gateway")

    checker = requests.Session()
    checker.trust_env = False

    def on_update(update: TokenUpdate) -> None:
        if update.kind is TokenKind.JSAPI_TICKET:
            say("subscriber", ticket_line(update, sandbox, now_s=time.time()))
            return
        answer = checker.get(
            f"{sandbox.base_url}/cgi-bin/getcallbackip",
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

    def show_gateway() -> None:
        url = f"{gateway_url}/v1/apps/{first_app}/access_token"
        headers = {"Authorization": f"Bearer {api_key}"}
        if not wait_until(
            lambda: checker.get(url, headers=headers, timeout=2).status_code == 200, 30, stop
        ):
            return
        body = checker.get(url, headers=headers, timeout=2).json()
        say(
            "gateway",
            f"curl above -> 200: v{body['version']} {mask(body['access_token'])}, "
            f"expires_in {body['expires_in']} s",
        )

    client = TokenClient(settings, name="wxtoken-demo-subscriber")
    client.on_update(on_update)
    threading.Thread(target=show_gateway, daemon=True).start()
    started = time.monotonic()
    children = [("producer", producer), ("gateway", gateway)]
    if platform is not None:
        platform.authorize_later(sandbox.base_url, min(15.0, args.expires_in / 2), stop)
        if platform.receiver is not None:
            children.append(("receiver", platform.receiver))
    try:
        client.start()
        while not inbox.wait(0.5):
            for name, child in children:
                if child.poll() is not None:
                    say("demo", f"the {name} exited with code {child.returncode}")
                    return 1
            if args.duration and time.monotonic() - started >= args.duration:
                break
    finally:
        say("demo", "stopping")
        stop.set()
        client.close()
        for child in (gateway, producer):
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
                try:
                    child.wait(10)
                except subprocess.TimeoutExpired:
                    child.kill()
        if platform is not None:
            platform.close()
        sandbox.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
