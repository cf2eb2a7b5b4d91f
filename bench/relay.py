"""A relay's failure story, measured: production's gateway cut for 60 s.

A "production" (the sandbox WeChat with short tokens, one producer, Redis, RabbitMQ, a
gateway) and a "test environment" relay gateway fed by production's stream through a TCP
proxy, with no Redis or broker of its own. The proxy is cut for `--cut-s`; meanwhile the
relay is asked for the token every 100 ms: how often it answered with a token, how often
with 503, and how many answers held a token past its expiry (the goal: 0). Then production
comes back: how long until the relay serves production's current version (the goal: ≤ 2 s).
Prints figures, asserts nothing. Needs the local Redis and RabbitMQ.

    .venv/bin/python bench/relay.py [--cut-s 60] [--expires-in 40]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pika
import redis

from consumer_lib.wire.signing import generate_keypair
from tests.conftest import AMQP_URL, REDIS_URL
from tests.integration.gateway_stack import start_gateway, start_relay, wait_ready
from tests.integration.stack import make_stack
from tests.integration.tcp_proxy import proxy_to
from tests.waiting import wait_for


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cut-s", type=float, default=60.0)
    parser.add_argument("--expires-in", type=int, default=40, help="sandbox token life, s")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="wxtoken-bench-relay-"))
    tag = uuid.uuid4().hex[:10]
    prefix, exchange = f"wxbench-{tag}", f"wxbench.{tag}"
    private_key, public_key = generate_keypair(tmp / "bench.key")
    service_env = {
        "WXTOKEN_REDIS_URL": REDIS_URL,
        "WXTOKEN_AMQP_URL": AMQP_URL,
        "WXTOKEN_EXCHANGE": exchange,
        "WXTOKEN_KEY_PREFIX": prefix,
        "WXTOKEN_SIGNING_KEY_FILE": str(private_key),
        "WXTOKEN_VERIFY_KEYS": str(public_key),
    }
    stack = make_stack(tmp, service_env, expires_in_s=args.expires_in, app_count=1)
    app_id = stack.app_ids[0]
    try:
        stack.producer(WXTOKEN_LOG_LEVEL="INFO")
        wait_for(lambda: stack.snapshot(app_id), timeout_s=30, message="the first token")
        production = start_gateway(stack, tmp, WXTOKEN_GATEWAY_STREAM_HEARTBEAT_S="0.5")
        wait_ready(production)
        port = int(production.base_url.rsplit(":", 1)[1])
        with proxy_to("127.0.0.1", port) as proxy:
            relay = start_relay(
                stack, tmp, f"http://127.0.0.1:{proxy.port}", production.keys["reader"]
            )
            wait_ready(relay)
            path = f"/v1/apps/{app_id}/access_token"
            served, unavailable, expired, versions = 0, 0, 0, set()
            proxy.cut()
            cut_at = time.monotonic()
            while time.monotonic() - cut_at < args.cut_s:
                asked_at = time.time()
                answer = relay.get(path)
                if answer.status_code == 200:
                    served += 1
                    body = answer.json()
                    versions.add(body["version"])
                    expired += body["expires_at"] <= asked_at
                else:
                    unavailable += 1
                time.sleep(0.1)  # the pace of the reads, not a wait for something
            proxy.restore()
            restored_at = time.monotonic()

            def in_sync() -> bool:
                current = stack.snapshot(app_id)
                answer = relay.get(path)
                return (
                    current is not None
                    and answer.status_code == 200
                    and answer.json()["version"] >= current.version
                )

            wait_for(in_sync, timeout_s=60, interval_s=0.05, message="the relay in sync")
            sync_s = time.monotonic() - restored_at
    finally:
        stack.close()
        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()
        connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
        connection.channel().exchange_delete(exchange)
        connection.close()
    print(f"relay: production's gateway cut for {args.cut_s:.0f} s ({args.expires_in} s tokens)")
    print(f"  relay answers during the cut: {served} with a token, {unavailable} 503")
    print(f"  answers holding an expired token: {expired} (goal 0)")
    print(f"  versions served during the cut: {sorted(versions)}")
    print(f"  back in sync with production {sync_s:.2f} s after the restore (goal <= 2 s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
