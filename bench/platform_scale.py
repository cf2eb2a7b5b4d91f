"""Issue 21's scale rows for a third-party platform with thousands of authorizers:

- cold start: a producer started on an empty Redis beside a registry of N authorized
  authorizers; seconds until every authorizer's token is in Redis (goal: 10,000 in <= 60 s);
- steady state with them: the leader's CPU (% of one core) and RSS over a window (goal: the
  scale goals, <= 5 % and <= 250 MiB);
- Redis FLUSHALL, then a producer restart: authorizers lost (goal: 0) and seconds until every
  token is back (goal: <= 60 s).

Everything real, on loopback: a private `redis-server` on a free port (the FLUSHALL is
its own), the local RabbitMQ (a unique exchange), a private database on the local
PostgreSQL or MariaDB (`--db`), the platform receiver and the sandbox (playing WeChat's open
platform, in a child process) and `python -m producer`. The sandbox seeds N customers who
authorized long ago; the registry gets their refresh tokens (as a reconciliation would
store them). Baseline in the same run: a raw pika publisher with confirms sending one
message per authorizer (what publishing them costs at least).

    .venv/bin/python bench/platform_scale.py [--authorizers 10000] [--db postgresql] [--window 30]
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import redis
import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _scale_measure import measure, raw_publish_baseline, read_line, wait_until  # noqa: E402

from consumer_lib.wire.authorizers import authorizer_app_id  # noqa: E402
from consumer_lib.wire.keys import KeyLayout  # noqa: E402
from consumer_lib.wire.kinds import TokenKind  # noqa: E402
from tests.integration.gateway_stack import free_port  # noqa: E402

AMQP_URL = os.environ.get("WXTOKEN_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
COMPONENT = "wxbenchplatform001"
SECRET = "bench-component-secret"
TOKEN = "benchtoken"
AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
PREFIX = "wxcust"


def serve_sandbox(callback_url: str) -> None:
    """Child mode: the sandbox with the bench's platform; prints its base URL, runs on."""
    from ops.sandbox import SandboxConfig, SandboxPlatform, SandboxServer

    platform = SandboxPlatform(COMPONENT, SECRET, TOKEN, AES_KEY, callback_url=callback_url)
    server = SandboxServer(
        SandboxConfig(apps={"wxbenchplainapp001": SECRET}, platforms=[platform], expires_in_s=7200)
    )
    print(server.base_url, flush=True)
    server.serve_forever()


class Run:
    """The processes of one run, and what they share."""

    def __init__(self, tmp: Path, db: str, count: int) -> None:
        self.tmp, self.db, self.count = tmp, db, count
        self.children: list[subprocess.Popen[str]] = []
        tag = uuid.uuid4().hex[:8]
        self.prefix, self.exchange = f"bench-platform-{tag}", f"bench.platform.{tag}"
        keys = KeyLayout(self.prefix)
        self.app_ids = [authorizer_app_id(COMPONENT, f"{PREFIX}{n:08d}") for n in range(count)]
        self.token_keys = [keys.token(a, TokenKind.ACCESS_TOKEN) for a in self.app_ids]

    def spawn(self, args: list[str], env: dict[str, str], log: str) -> subprocess.Popen[str]:
        child = subprocess.Popen(
            [sys.executable, *args],
            cwd=REPO,
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=(self.tmp / log).open("w"),
            text=True,
        )
        self.children.append(child)
        return child

    def stored(self, client: redis.Redis) -> int:
        """How many authorizers' tokens Redis holds (pipelined EXISTS)."""
        held = 0
        for start in range(0, len(self.token_keys), 5000):
            pipe = client.pipeline(transaction=False)
            for key in self.token_keys[start : start + 5000]:
                pipe.exists(key)
            held += sum(int(found) for found in pipe.execute())
        return held

    def close(self) -> None:
        for child in self.children:
            if child.poll() is None:
                child.kill()
                child.wait(10)


def seed_registry(db_url: str, key_file: Path, seeded: list[dict[str, str]]) -> float:
    """Store each seeded customer's refresh token in the registry; seconds taken."""
    from producer.platform.db.startup import open_registry

    registry = open_registry(db_url, key_file)
    started = time.monotonic()
    try:

        def store(chunk: list[dict[str, str]]) -> None:
            for row in chunk:
                registry.authorize(COMPONENT, row["authorizer_appid"], row["refresh_token"])

        chunks = [seeded[n : n + 500] for n in range(0, len(seeded), 500)]
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            list(pool.map(store, chunks))
        return time.monotonic() - started
    finally:
        registry.close()


def run(count: int, db: str, window_s: float, timeout_s: float, tmp: Path) -> dict[str, object]:
    from consumer_lib.wire.signing import generate_keypair
    from tests.integration.platform_db import private_database
    from tests.integration.servers import RedisServer

    figures: dict[str, object] = {"authorizers": count, "db": db}
    bench = Run(tmp, db, count)
    signing_key, public_key = generate_keypair(tmp / "signing")
    key_file = tmp / "platform.keys"
    key_file.write_text(base64.b64encode(os.urandom(32)).decode() + "\n")
    platforms_file = tmp / "platforms.toml"
    platforms_file.write_text(
        f'[[platforms]]\ncomponent_appid = "{COMPONENT}"\nsecret_env = "BENCH_SECRET"\n'
        'token_env = "BENCH_TOKEN"\nencoding_aes_key_env = "BENCH_AES_KEY"\n'
    )
    apps_file = tmp / "apps.toml"
    apps_file.write_text('[[apps]]\napp_id = "wxbenchplainapp001"\nsecret_env = "BENCH_SECRET"\n')
    receiver_port = free_port()
    callback = f"http://127.0.0.1:{receiver_port}/wechat/platform/{COMPONENT}/events"
    with RedisServer(tmp) as server, private_database(db) as url:
        client = server.client()
        db_url = url.render_as_string(hide_password=False)
        env = {
            "WXTOKEN_REDIS_URL": server.url,
            "WXTOKEN_AMQP_URL": AMQP_URL,
            "WXTOKEN_KEY_PREFIX": bench.prefix,
            "WXTOKEN_EXCHANGE": bench.exchange,
            "WXTOKEN_VERIFY_KEYS": str(public_key),
            "WXTOKEN_SIGNING_KEY_FILE": str(signing_key),
            "WXTOKEN_PLATFORMS_FILE": str(platforms_file),
            "WXTOKEN_PLATFORM_DB_URL": db_url,
            "WXTOKEN_PLATFORM_KEY_FILE": str(key_file),
            "WXTOKEN_RECEIVER_PORT": str(receiver_port),
            "WXTOKEN_APPS_FILE": str(apps_file),
            "WXTOKEN_LOG_LEVEL": "WARNING",
            "BENCH_SECRET": SECRET,
            "BENCH_TOKEN": TOKEN,
            "BENCH_AES_KEY": AES_KEY,
        }
        try:
            bench.spawn(["-m", "producer.platform.receiver"], env, "receiver.log")
            readyz = f"http://127.0.0.1:{receiver_port}/readyz"
            if not wait_until(lambda: _answers(readyz), 30, step_s=0.2):
                raise SystemExit(f"the receiver did not start; see {tmp / 'receiver.log'}")
            sandbox = bench.spawn([__file__, "--serve-sandbox", callback], {}, "sandbox.log")
            base_url = read_line(sandbox, 30)
            if not base_url.startswith("http"):
                raise SystemExit(f"the sandbox did not start; see {tmp / 'sandbox.log'}")
            env["WXTOKEN_WECHAT_BASE_URL"] = base_url
            seeded = requests.post(
                f"{base_url}/sandbox/platform/seed",
                json={"component_appid": COMPONENT, "prefix": PREFIX, "count": count},
                timeout=120,
            ).json()["authorizers"]
            figures["seed_registry_s"] = round(seed_registry(db_url, key_file, seeded), 1)

            # Cold start.
            started = time.monotonic()
            leader = bench.spawn(["-m", "producer"], env, "producer-1.log")
            if wait_until(lambda: bench.stored(client) >= count, timeout_s, step_s=0.5):
                figures["cold_start_s"] = round(time.monotonic() - started, 1)
            figures["cold_start_stored"] = bench.stored(client)

            # Steady state.
            time.sleep(5)
            usage = measure({"leader": leader.pid}, window_s)["leader"]
            figures["steady_cpu_pct"] = round(usage.cpu_pct, 2)
            figures["steady_rss_mib"] = round(usage.rss_mib, 1)
            figures["steady_threads"] = usage.threads

            # FLUSHALL, then a restart.
            leader.send_signal(signal.SIGTERM)
            leader.wait(60)
            client.flushall()
            restarted = time.monotonic()
            bench.spawn(["-m", "producer"], env, "producer-2.log")
            if wait_until(lambda: bench.stored(client) >= count, timeout_s, step_s=0.5):
                figures["after_flushall_s"] = round(time.monotonic() - restarted, 1)
            figures["after_flushall_lost"] = count - bench.stored(client)
            figures["raw_publish_baseline_s"] = round(raw_publish_baseline(count), 2)
            figures["load_average"] = [round(x, 2) for x in os.getloadavg()]
        finally:
            bench.close()
            client.close()
    return figures


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--authorizers", type=int, default=10_000)
    parser.add_argument("--db", choices=["postgresql", "mariadb"], default="postgresql")
    parser.add_argument("--window", type=float, default=30.0, help="steady-state seconds")
    parser.add_argument("--timeout", type=float, default=180.0, help="give up a fill after")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--serve-sandbox", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_sandbox:
        serve_sandbox(args.serve_sandbox)
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-platform-") as tmp:
        figures = run(args.authorizers, args.db, args.window, args.timeout, Path(tmp))
    if args.json:
        print(json.dumps(figures))
        return 0
    count = figures["authorizers"]
    cold = figures.get("cold_start_s")
    baseline = figures["raw_publish_baseline_s"]
    print(f"platform with {count} authorizers on {figures['db']} (load {figures['load_average']})")
    print(f"  registry seeded in {figures['seed_registry_s']} s (setup, not measured)")
    print(
        f"  cold start: every authorizer token in Redis after {cold} s "
        f"({figures['cold_start_stored']} of {count}; goal <= 60 s)"
        + (f"; {cold / baseline:.1f}x a raw publish of as many ({baseline} s)" if cold else "")
    )
    print(
        f"  steady state, leader: {figures['steady_cpu_pct']} % of a core, "
        f"{figures['steady_rss_mib']} MiB RSS, {figures['steady_threads']} threads "
        "(goal <= 5 %, <= 250 MiB)"
    )
    print(
        f"  FLUSHALL + restart: {figures['after_flushall_lost']} lost, every token back after "
        f"{figures.get('after_flushall_s')} s (goal 0, <= 60 s)"
    )
    ok = (
        cold is not None
        and figures.get("after_flushall_s") is not None
        and figures["after_flushall_lost"] == 0
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
