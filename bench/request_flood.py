"""Issue 8 item 1's attack, measured: a consumer flooding refresh requests about the
current token, against two producers with their default settings.

One classic app and one stable app on the sandbox WeChat (40-second tokens, so the schedule
refreshes each about every 32 s), two producers (`python -m producer`, signing), and the
attacker (`tests/integration/flooder.py`): for `--seconds` (60), about `--rate` (170)
requests a second, each about an app's current token (a consumer receives every token, so
it knows the current one). Prints, per app, the upstream token fetches the sandbox answered
in that time and how many of them the schedule made (the audit trail's `refresh` entries)
against those the requests caused (`forced_refresh`), and the token checks (getcallbackip).
Issue 8's figure before the fix: 1,999 classic fetches in 60 s, the whole daily quota.

    .venv/bin/python bench/request_flood.py [--seconds 60] [--rate 170] [--no-requester-limit]
    .venv/bin/python bench/request_flood.py --unknown-apps

`--unknown-apps` is issue 18 item 4's case instead: one producer with its default
per-requester limit, a flood of 50 requests/s about apps nobody serves, and beside it, from
the same broker login (every service shares one), 10 genuine reports, 1 s apart, of a token
the sandbox really revoked. Prints how many of the 10 reached the leader (its
`refresh_requests_total{handling="received"}`) and when the revoked token was replaced.
Issue 18's figure before the fix: 1 of 10.

`--no-requester-limit` lifts the per-requester allowance, so every request reaches the
leader and the check before refresh, the spacing and the cap are what is measured.
`--check-fails` makes the sandbox answer every token check with 40164 (IP not whitelisted),
so no verdict is had and only the spacing and the cap hold (the worst case).

Needs the local Redis and RabbitMQ; uses a fresh key prefix and exchange, removed after.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pika
import redis

from consumer_lib.amqp import declare_requests_exchange, publish_request
from consumer_lib.snapshot import SnapshotReader
from consumer_lib.wire.keys import KeyLayout
from consumer_lib.wire.refresh_request import RefreshRequest, requests_exchange
from consumer_lib.wire.signing import generate_keypair
from ops.sandbox import SandboxConfig, SandboxServer
from ops.sandbox.faults import Fault
from producer.store.audit import AuditLog
from tests.integration.flooder import Flooder
from tests.integration.procs import Producer
from tests.integration.servers import free_port

REDIS_URL = "redis://127.0.0.1:6379/0"
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
EXPIRES_IN_S = 40
APPS = {
    "wxflood0000classic": ("secret-classic", "classic"),
    "wxflood00000stable": ("secret-stable", "stable"),
}


def counts(sandbox: SandboxServer, audit: AuditLog, app_id: str) -> dict[str, int]:
    stats = sandbox.state.stats()
    fetches = stats["fetches"][app_id]  # type: ignore[index]
    checks = stats["calls"].get("getcallbackip", {}).get(app_id, 0)  # type: ignore[union-attr]
    events = [e.event for e in audit.read(app_id, limit=100_000)]
    return {
        "upstream": fetches["classic"] + fetches["stable"] + fetches["stable_forced"],
        "forced_upstream": fetches["stable_forced"],
        "scheduled": events.count("refresh"),
        "caused": events.count("forced_refresh"),
        "checks": checks,
        "audit_requests": events.count("refresh_request"),
    }


def wait_until(condition: object, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.1)


def scrape(port: int, metric: str, **labels: str) -> int:
    """One counter of a producer's /metrics (0 when absent)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    for line in text.splitlines():
        if line.startswith((metric + "{", metric + " ")) and all(
            f'{k}="{v}"' in line for k, v in labels.items()
        ):
            return int(float(line.rsplit(" ", 1)[1]))
    return 0


def unknown_apps_case(genuine: int = 10, flood_rate: float = 50.0) -> int:
    """Issue 18 item 4: a flood about unknown apps beside genuine reports of a revoked token."""
    tag = uuid.uuid4().hex[:8]
    prefix, exchange = f"wxbench-{tag}", f"wxbench.{tag}"
    app_id, secret = "wxflood0000genuine", "secret-genuine"
    tmp = Path(tempfile.mkdtemp(prefix="wxbench-unknown-"))
    private_key, public_key = generate_keypair(tmp / "signing")
    sandbox = SandboxServer(
        SandboxConfig(apps={app_id: secret}, expires_in_s=3600, overlap_s=10)
    ).start()
    apps_file = tmp / "apps.toml"
    apps_file.write_text(f'[[apps]]\napp_id = "{app_id}"\nsecret = "{secret}"\n')
    port = free_port()
    env = {
        "WXTOKEN_REDIS_URL": REDIS_URL,
        "WXTOKEN_AMQP_URL": AMQP_URL,
        "WXTOKEN_EXCHANGE": exchange,
        "WXTOKEN_KEY_PREFIX": prefix,
        "WXTOKEN_SIGNING_KEY_FILE": str(private_key),
        "WXTOKEN_VERIFY_KEYS": str(public_key),
        "WXTOKEN_APPS_FILE": str(apps_file),
        "WXTOKEN_WECHAT_BASE_URL": sandbox.base_url,
        "WXTOKEN_METRICS_PORT": str(port),
    }
    client = redis.Redis.from_url(REDIS_URL)
    reader = SnapshotReader(client, KeyLayout(prefix))
    producer = Producer(env, tmp / "producer.log")
    flooder: Flooder | None = None
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        wait_until(lambda: reader.read(app_id), 60, "the first token")
        wait_until(lambda: scrape(port, "wxtoken_producer_leader") == 1, 30, "the leader")
        flooder = Flooder(
            amqp_url=AMQP_URL,
            redis_url=REDIS_URL,
            exchange=exchange,
            key_prefix=prefix,
            app_ids=[f"wxnobody{n:05d}" for n in range(50)],
            rate_per_s=flood_rate,
            made_up=True,
        ).start()
        time.sleep(3)  # the flood has used up any burst
        revoked = reader.read(app_id)
        assert revoked is not None
        assert sandbox.state.invalidate(app_id)
        labels = {"app_id": app_id, "kind": "access_token", "handling": "received"}
        received_before = scrape(port, "wxtoken_producer_refresh_requests_total", **labels)
        channel = connection.channel()
        declare_requests_exchange(channel, exchange)
        revoked_at = time.monotonic()
        replaced_s: float | None = None
        for n in range(genuine):
            now_s = time.time()
            request = RefreshRequest.for_token(
                app_id, revoked.value, requester=f"client:genuine-{n}", now_s=now_s
            )
            publish_request(channel, exchange, request, sender="genuine", now_s=now_s)
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline:
                connection.process_data_events(0.1)
                current = reader.read(app_id)
                if replaced_s is None and current is not None and current.version > revoked.version:
                    replaced_s = time.monotonic() - revoked_at
        time.sleep(2)  # the last reports reach the leader
        flooder.stop()
        got = scrape(port, "wxtoken_producer_refresh_requests_total", **labels) - received_before
        ignored = scrape(port, "wxtoken_producer_messages_rejected_total", reason="not_held")
        over_rate = scrape(port, "wxtoken_producer_messages_rejected_total", reason="over_rate")
        print(
            f"unknown-apps flood: {flooder.sent} requests at {flood_rate:.0f}/s about 50 apps "
            f"nobody serves, and {genuine} genuine reports 1 s apart of a revoked token, all "
            f"from one broker login; one producer, default per-requester limit"
        )
        print(
            f"  genuine reports that reached the leader: {got} of {genuine}; the revoked "
            f"token replaced "
            + (f"{replaced_s:.1f} s after the first report" if replaced_s is not None else "never")
        )
        print(
            f"  flood: {ignored} ignored before charging (not served), {over_rate} dropped "
            f"over the allowance; 'dropping refresh requests' log lines: "
            f"{producer.stderr_text().count('dropping refresh requests from')}"
        )
        return 0
    finally:
        if flooder is not None and flooder.error is None:
            flooder.stop()
        producer.terminate()
        sandbox.stop()
        stale = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if stale:
            client.delete(*stale)
        for name in (exchange, requests_exchange(exchange)):
            connection.channel().exchange_delete(name)
        connection.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=170.0, help="requests per second")
    parser.add_argument("--no-requester-limit", action="store_true")
    parser.add_argument("--check-fails", action="store_true")
    parser.add_argument("--unknown-apps", action="store_true")
    args = parser.parse_args()
    if args.unknown_apps:
        return unknown_apps_case()
    tag = uuid.uuid4().hex[:8]
    prefix, exchange = f"wxbench-{tag}", f"wxbench.{tag}"
    tmp = Path(tempfile.mkdtemp(prefix="wxbench-flood-"))
    private_key, public_key = generate_keypair(tmp / "signing")
    sandbox = SandboxServer(
        SandboxConfig(
            apps={a: s for a, (s, _) in APPS.items()}, expires_in_s=EXPIRES_IN_S, overlap_s=10
        )
    ).start()
    if args.check_fails:
        sandbox.state.set_fault(Fault(mode="ip", endpoints=frozenset({"getcallbackip"})))
    apps_file = tmp / "apps.toml"
    apps_file.write_text(
        "".join(
            f'[[apps]]\napp_id = "{a}"\nsecret_env = "FLOOD_SECRET_{n}"\ntoken_api = "{api}"\n'
            for n, (a, (_, api)) in enumerate(APPS.items())
        )
    )
    env = {
        "WXTOKEN_REDIS_URL": REDIS_URL,
        "WXTOKEN_AMQP_URL": AMQP_URL,
        "WXTOKEN_EXCHANGE": exchange,
        "WXTOKEN_KEY_PREFIX": prefix,
        "WXTOKEN_SIGNING_KEY_FILE": str(private_key),
        "WXTOKEN_VERIFY_KEYS": str(public_key),
        "WXTOKEN_APPS_FILE": str(apps_file),
        "WXTOKEN_WECHAT_BASE_URL": sandbox.base_url,
        "WXTOKEN_LEASE_TTL_S": "4",
        **{f"FLOOD_SECRET_{n}": s for n, (s, _) in enumerate(APPS.values())},
    }
    if args.no_requester_limit:
        env["WXTOKEN_REQUEST_RATE_PER_REQUESTER_PER_S"] = "10000"
        env["WXTOKEN_REQUEST_BURST_PER_REQUESTER"] = "100000"
    client = redis.Redis.from_url(REDIS_URL)
    keys = KeyLayout(prefix)
    audit, reader = AuditLog(client, keys), SnapshotReader(client, keys)
    producers = [Producer(env, tmp / f"producer-{n}.log") for n in range(2)]
    flooder: Flooder | None = None
    try:
        for app_id in APPS:
            wait_until(lambda a=app_id: reader.read(a), 60, f"{app_id}'s first token")
        before = {a: counts(sandbox, audit, a) for a in APPS}
        flooder = Flooder(
            amqp_url=AMQP_URL,
            redis_url=REDIS_URL,
            exchange=exchange,
            key_prefix=prefix,
            app_ids=list(APPS),
            rate_per_s=args.rate,
        ).start()
        started = time.monotonic()
        time.sleep(args.seconds)
        flooder.stop()
        elapsed_s = time.monotonic() - started
        after = {a: counts(sandbox, audit, a) for a in APPS}
        logs = "".join(p.stderr_text() for p in producers)
        print(
            f"request flood: {flooder.sent} requests in {elapsed_s:.0f} s "
            f"({flooder.sent / elapsed_s:.0f}/s) about each new current token of 2 apps, "
            f"{sum(len(t) for t in flooder.tokens.values())} tokens reported; 2 producers, "
            f"{EXPIRES_IN_S} s tokens, "
            f"{'no per-requester limit' if args.no_requester_limit else 'default settings'}"
            f"{', every token check failing (40164)' if args.check_fails else ''}"
        )
        for app_id, (_, api) in APPS.items():
            d = {k: after[app_id][k] - before[app_id][k] for k in after[app_id]}
            print(
                f"  {api:7s}: {d['upstream']} upstream token fetches "
                f"({d['forced_upstream']} forced), {d['scheduled']} scheduled, "
                f"{d['caused']} caused by requests; {d['checks']} token checks "
                f"(getcallbackip); {d['audit_requests']} refresh_request audit entries"
            )
        dropped = logs.count("dropping refresh requests from")
        print(f"  per-requester limit: {dropped} 'dropping refresh requests' log line(s)")
        return 0
    finally:
        if flooder is not None and flooder.error is None:
            flooder.stop()
        for producer in producers:
            producer.terminate()
        sandbox.stop()
        stale = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if stale:
            client.delete(*stale)
        connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
        for name in (exchange, requests_exchange(exchange)):
            connection.channel().exchange_delete(name)
        connection.close()


if __name__ == "__main__":
    sys.exit(main())
