"""`make demo`: the sandbox WeChat, a producer and a subscriber, all on this machine.

The sandbox hands out 30-second tokens, so a refresh arrives about every 24 seconds. The
producer runs as its own process (its log lines are prefixed `producer |`); the
subscriber is a `TokenClient` in this process that prints every token it is pushed and
checks it with the sandbox, as a service would by calling WeChat with it.

    python -m ops.demo [--duration SECONDS] [--expires-in SECONDS]
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import FrameType
from urllib.parse import urlsplit

import requests

from consumer_lib import ClientSettings, ConfigError, TokenClient, TokenUpdate
from consumer_lib.settings import (
    is_sentinel_url,
    load_settings,
    parse_sentinel_url,
    split_urls,
)
from consumer_lib.wire.signing import generate_keypair

from ._sandbox import SandboxConfig, SandboxServer

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


def say(who: str, text: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {who:>10} | {text}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Watch wxtoken refresh tokens end to end.")
    parser.add_argument("--duration", type=float, default=0, help="stop after S seconds")
    parser.add_argument("--expires-in", type=int, default=30, help="sandbox token lifetime, s")
    args = parser.parse_args(argv)
    if args.expires_in < 10:
        parser.error("--expires-in must be at least 10 seconds")
    logging.basicConfig(
        level=logging.WARNING,
        format="%(asctime)s subscriber | %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )

    workdir = Path(tempfile.mkdtemp(prefix="wxtoken-demo-"))
    # A throwaway key pair: the producer signs every token, the subscriber verifies it.
    private_key, public_key = generate_keypair(workdir / "demo-signing.key")
    try:
        settings = load_settings(
            ClientSettings,
            key_prefix=DEMO_PREFIX,
            exchange=DEMO_EXCHANGE,
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

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        del signum, frame
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    apps_file = workdir / "apps.toml"
    apps_file.write_text(
        '[[apps]]\napp_id = "wxdemo0000000001"\nsecret = "demo-secret-1"\ntoken_api = "stable"\n\n'
        '[[apps]]\napp_id = "wxdemo0000000002"\nsecret = "demo-secret-2"\ntoken_api = "classic"\n'
    )
    sandbox = SandboxServer(
        SandboxConfig(
            apps=DEMO_APPS, expires_in_s=args.expires_in, overlap_s=max(5.0, args.expires_in / 3)
        )
    ).start()
    say("sandbox", f"WeChat stand-in on {sandbox.base_url}, {args.expires_in}-second tokens")

    env = {
        **os.environ,
        "WXTOKEN_REDIS_URL": settings.redis_url,
        "WXTOKEN_AMQP_URL": settings.amqp_url,
        "WXTOKEN_KEY_PREFIX": DEMO_PREFIX,
        "WXTOKEN_EXCHANGE": DEMO_EXCHANGE,
        "WXTOKEN_WECHAT_BASE_URL": sandbox.base_url,
        "WXTOKEN_APPS_FILE": str(apps_file),
        "WXTOKEN_REPUBLISH_INTERVAL_S": "10",
        "WXTOKEN_SIGNING_KEY_FILE": str(private_key),
        "WXTOKEN_VERIFY_KEYS": str(public_key),
    }
    producer = subprocess.Popen(
        [sys.executable, "-m", "producer"], env=env, stderr=subprocess.PIPE, text=True
    )
    threading.Thread(target=relay, args=(producer,), daemon=True).start()

    checker = requests.Session()
    checker.trust_env = False

    def on_update(update: TokenUpdate) -> None:
        answer = checker.get(
            f"{sandbox.base_url}/cgi-bin/getcallbackip",
            params={"access_token": update.value},
            timeout=5,
        ).json()
        verdict = "accepted" if "errcode" not in answer else f"REJECTED {answer['errcode']}"
        say(
            "subscriber",
            f"{update.app_id} v{update.version} ({update.source}) {update.masked}, "
            f"{update.seconds_left(time.time()):.1f} s left; WeChat: {verdict}",
        )

    client = TokenClient(settings, name="wxtoken-demo-subscriber")
    client.on_update(on_update)
    say(
        "demo",
        "try, in another shell:  .venv/bin/wxtoken status   (with "
        f"WXTOKEN_KEY_PREFIX={DEMO_PREFIX} WXTOKEN_EXCHANGE={DEMO_EXCHANGE}); Ctrl-C stops",
    )
    started = time.monotonic()
    try:
        client.start()
        while not stop.wait(0.5):
            if producer.poll() is not None:
                say("demo", f"the producer exited with code {producer.returncode}")
                return 1
            if args.duration and time.monotonic() - started >= args.duration:
                break
    finally:
        say("demo", "stopping")
        client.close()
        if producer.poll() is None:
            producer.send_signal(signal.SIGTERM)
            try:
                producer.wait(10)
            except subprocess.TimeoutExpired:
                producer.kill()
        sandbox.stop()
    return 0


def relay(producer: subprocess.Popen[str]) -> None:
    """Echo the producer's log lines, without the timestamp it already has."""
    assert producer.stderr is not None
    for line in producer.stderr:
        text = line.rstrip("\n")
        say("producer", text.split(" ", 2)[-1] if text[:4].isdigit() else text)


if __name__ == "__main__":
    sys.exit(main())
