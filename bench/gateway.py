"""How fast does `wxtoken-gateway` answer next to an endpoint doing a Redis GET per request?

Both servers are Starlette on uvicorn (uvloop, httptools, one worker process, access log
off) on this machine, measured in this one run by `wrk` from a second process with
keep-alive connections (`wrk -t1 -c32 -d10s --latency`):

- the gateway: `GET /v1/apps/{id}/access_token` with an API key (`Authorization: Bearer`),
  answered from the memory of its TokenClient (real Redis and RabbitMQ behind it);
- the baseline: the same route, unauthenticated, doing `await redis.get(key)` (redis-py's
  asyncio client) of the same stored update and answering it.

Prints requests/s and p50/p99 latency of each, the ratios and `os.cpu_count()`. Only the
ratios of one run mean anything; other processes on the machine move both figures.

    .venv/bin/python bench/gateway.py [--duration-s 10] [--connections 32]

`wrk` is Debian's package: `make bench-tools` (or `apt-get install wrk`) installs it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
import pika
import redis

from consumer_lib import TokenSource, TokenUpdate
from consumer_lib.amqp import declare_exchange
from consumer_lib.wire.keys import KeyLayout
from ops.gateway import add_key
from producer.store.tokens import TokenStore

ROOT = Path(__file__).resolve().parents[1]
REDIS_URL = "redis://127.0.0.1:6379/0"
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
APP_ID = "wxbench000000001"


def serve_redis_endpoint(port: int, key: str) -> None:
    """The baseline server: one Redis GET per request (runs in a child process)."""
    import redis.asyncio
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    client = redis.asyncio.Redis.from_url(REDIS_URL)

    async def read(request: Request) -> Response:
        raw = await client.get(key)
        if raw is None:
            return JSONResponse({"error": "not_found"}, status_code=404)
        payload = json.loads(json.loads(raw)["payload"]) if b'"payload"' in raw else json.loads(raw)
        return JSONResponse(
            {
                "access_token": payload["value"],
                "expires_in": int(payload["expires_at"] - time.time()),
                "expires_at": payload["expires_at"],
                "version": payload["version"],
            }
        )

    app = Starlette(routes=[Route("/v1/apps/{app_id}/access_token", read)])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_200(url: str, headers: dict[str, str], proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            if httpx.get(url, headers=headers, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{url} did not answer 200 within 30 s")


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def run_wrk(url: str, headers: dict[str, str], args: argparse.Namespace) -> dict[str, float]:
    command = ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{args.duration_s}s"]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    out = subprocess.run([*command, "--latency", url], capture_output=True, text=True, check=True)
    text = out.stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))  # type: ignore[union-attr]
    figures = {"rps": rps}
    for pct in ("50", "99"):
        value, unit = re.search(rf"\s{pct}%\s+([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
        figures[f"p{pct}_ms"] = float(value) * _UNITS[unit]
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    figures["non2xx"] = float(non2xx.group(1)) if non2xx else 0.0
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration-s", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--serve-redis", nargs=2, metavar=("PORT", "KEY"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_redis:
        serve_redis_endpoint(int(args.serve_redis[0]), args.serve_redis[1])
        return 0
    if shutil.which("wrk") is None:
        print("wrk is not installed: run `make bench-tools` (apt-get install wrk)", file=sys.stderr)
        return 2

    prefix = f"wxbench-{uuid.uuid4().hex[:8]}"
    layout = KeyLayout(prefix)
    client = redis.Redis.from_url(REDIS_URL)
    now = time.time()
    TokenStore(client, layout).write(
        TokenUpdate(
            app_id=APP_ID,
            value="T" * 140,
            issued_at=now,
            expires_at=now + 3600,
            version=1,
            source=TokenSource.REFRESH,
            producer_id="bench",
        )
    )
    broker = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    declare_exchange(broker.channel(), f"wxbench.{prefix}")
    tmp = Path(tempfile.mkdtemp(prefix="wxbench-"))
    keys_file = tmp / "keys.json"
    api_key = add_key(keys_file, "bench", apps=["wx*"], scopes=["read"], rate_per_s=1e6)
    gw_port, redis_port = free_port(), free_port()
    env = {
        **os.environ,
        "WXTOKEN_REDIS_URL": REDIS_URL,
        "WXTOKEN_AMQP_URL": AMQP_URL,
        "WXTOKEN_KEY_PREFIX": prefix,
        "WXTOKEN_EXCHANGE": f"wxbench.{prefix}",
        "WXTOKEN_INSECURE_ACCEPT_UNSIGNED": "1",  # plain updates: signing is not measured
        "WXTOKEN_GATEWAY_KEYS_FILE": str(keys_file),
        "WXTOKEN_GATEWAY_PORT": str(gw_port),
        "WXTOKEN_LOG_LEVEL": "WARNING",
    }
    path = f"/v1/apps/{APP_ID}/access_token"
    auth = {"Authorization": f"Bearer {api_key}"}
    gateway = subprocess.Popen([sys.executable, "-m", "ops.gateway"], cwd=ROOT, env=env)
    baseline = subprocess.Popen(
        [sys.executable, __file__, "--serve-redis", str(redis_port), layout.token(APP_ID)],
        cwd=ROOT,
        env=env,
    )
    try:
        gw_url = f"http://127.0.0.1:{gw_port}{path}"
        redis_url = f"http://127.0.0.1:{redis_port}{path}"
        wait_200(gw_url, auth, gateway)
        wait_200(redis_url, {}, baseline)
        # A short warm-up each, then the measured runs.
        warm = argparse.Namespace(**{**vars(args), "duration_s": 2})
        run_wrk(gw_url, auth, warm)
        run_wrk(redis_url, {}, warm)
        gw = run_wrk(gw_url, auth, args)
        rd = run_wrk(redis_url, {}, args)
    finally:
        for proc in (gateway, baseline):
            proc.terminate()
            proc.wait(10)
        client.delete(layout.token(APP_ID), layout.version(APP_ID), layout.known)
        client.close()
        shutil.rmtree(tmp, ignore_errors=True)
        broker.channel().exchange_delete(f"wxbench.{prefix}")
        broker.close()

    print(
        f"cores: {os.cpu_count()}; wrk -t{args.threads} -c{args.connections} -d{args.duration_s}s"
    )
    for name, f in (("gateway (memory, API key)", gw), ("Redis GET per request    ", rd)):
        print(
            f"{name}: {f['rps']:9.0f} req/s  p50 {f['p50_ms']:6.2f} ms  p99 {f['p99_ms']:6.2f} ms"
            f"  non-2xx {f['non2xx']:.0f}"
        )
    print(
        f"ratio: throughput {gw['rps'] / rd['rps']:.2f}x, "
        f"p99 {gw['p99_ms'] / rd['p99_ms']:.2f} of the Redis endpoint's"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
