"""The Node.js drop-in (`clients/node`, co-wechat-api fed by the gateway) runs its own tests
here, so `make test` runs them: its unit tests (fake gateway, fake WeChat, the real
co-wechat-api package), and its end-to-end test against a real gateway in front of a real
producer and the sandbox WeChat, which must run, not skip. The package's dependencies come
from its committed package-lock.json (`npm ci`, once, kept in clients/node/node_modules).
Without node and npm these tests skip, except under CI=true."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from consumer_lib.wire.keys import KeyLayout
from producer.store.audit import AuditLog
from tests.conftest import IN_CI
from tests.waiting import wait_for

from .gateway_stack import RunningGateway, gateway
from .procs import REPO_ROOT
from .stack import Stack, make_stack

__all__ = ["gateway"]

NODE_DIR = REPO_ROOT / "clients" / "node"
UNIT_TESTS = ["test/store.test.js", "test/co-wechat-api.test.js"]
E2E_TEST = "test/e2e.test.js"
#: Variables the e2e test reads; the unit tests run without them.
E2E_VARIABLES = (
    "WXTOKEN_GATEWAY_URL",
    "WXTOKEN_GATEWAY_API_KEY",
    "WXTOKEN_E2E_APP_ID",
    "WXTOKEN_E2E_WECHAT_URL",
)


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        message = f"{name} is not installed (Node.js 20 or newer, with npm)"
        if IN_CI:
            pytest.fail(f"{message}, and CI=true requires it")
        pytest.skip(message)
    return found


@pytest.fixture(scope="session")
def node() -> str:
    """`node`, with the package's locked dependencies installed (`npm ci` when the lock is
    newer than what node_modules holds)."""
    node = _tool("node")
    npm = _tool("npm")
    installed = NODE_DIR / "node_modules" / ".package-lock.json"
    lock = NODE_DIR / "package-lock.json"
    if not installed.exists() or installed.stat().st_mtime < lock.stat().st_mtime:
        done = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=NODE_DIR,
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )
        assert done.returncode == 0, f"npm ci failed:\n{done.stdout}\n{done.stderr}"
    return node


def _run_node_tests(node: str, files: list[str], env: dict[str, str]) -> dict[str, int]:
    """`node --test` on `files` (TAP output); the summary's counts, after exit 0."""
    done = subprocess.run(
        [node, "--test", "--test-reporter=tap", *files],
        cwd=NODE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    print(done.stdout[-4000:])
    assert done.returncode == 0, f"node --test failed:\n{done.stdout[-8000:]}\n{done.stderr}"
    counts = {name: int(n) for name, n in re.findall(r"^# (\w+) (\d+)$", done.stdout, re.M)}
    assert counts.get("fail") == 0, counts
    return counts


def _base_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in E2E_VARIABLES}


def test_node_unit_tests_pass(node: str) -> None:
    """The store and the co-wechat-api helper against fake servers: every test passes."""
    counts = _run_node_tests(node, UNIT_TESTS, _base_env())
    assert counts["pass"] >= 30, counts
    assert counts["skipped"] == 0, counts


def test_node_e2e_skips_without_a_gateway(node: str) -> None:
    """Without the variables the e2e test says what it needs and skips (outside pytest)."""
    counts = _run_node_tests(node, [E2E_TEST], _base_env())
    assert counts["skipped"] == 1, counts


@pytest.fixture
def stack(tmp_path: Path, service_env: dict[str, str]) -> Iterator[Stack]:
    """Ten-minute sandbox tokens: no scheduled refresh during the test, so the only new
    token is the one the Node client's report asks for."""
    built = make_stack(tmp_path, service_env, expires_in_s=600, overlap_s=300)
    yield built
    built.close()


def test_co_wechat_api_recovers_through_the_gateway(gateway: RunningGateway, node: str) -> None:
    """The real co-wechat-api, fed by the gateway, calls getcallbackip on the sandbox; after
    the sandbox invalidates the token, its 40001 retry reports through the gateway (audited
    under the key's name), the producer fetches the successor, the call succeeds with it,
    and Node never asks WeChat's token endpoint (its recording proxy counts: 0)."""
    stack = gateway.stack
    app_id = stack.app_ids[0]
    issued_before = stack.issued(app_id)
    served_before = gateway.get(f"/v1/apps/{app_id}/access_token").json()["access_token"]
    env = {
        **_base_env(),
        "WXTOKEN_GATEWAY_URL": gateway.base_url,
        "WXTOKEN_GATEWAY_API_KEY": gateway.keys["reporter"],
        "WXTOKEN_E2E_APP_ID": app_id,
        "WXTOKEN_E2E_WECHAT_URL": stack.sandbox.base_url,
    }
    counts = _run_node_tests(node, [E2E_TEST], env)
    assert counts == {**counts, "tests": 1, "pass": 1, "skipped": 0}, "the e2e test ran"

    assert stack.issued(app_id) == issued_before + 1  # the producer fetched the successor
    served_after = gateway.get(f"/v1/apps/{app_id}/access_token").json()["access_token"]
    assert served_after != served_before
    assert stack.sandbox.state.is_valid(served_after)
    assert not stack.sandbox.state.is_valid(served_before)
    calls = httpx.get(stack.sandbox.base_url + "/sandbox/stats", timeout=5).json()["calls"]
    assert calls["getcallbackip"][app_id] >= 2  # Node's two answered calls (and the probe)
    # The gateway writes no audit entry; the producer sums reports up and names the requester.
    client = redis.Redis.from_url(gateway.env["WXTOKEN_REDIS_URL"])
    audit = AuditLog(client, KeyLayout(gateway.env["WXTOKEN_KEY_PREFIX"]))
    try:
        reports = wait_for(
            lambda: [e for e in audit.read(app_id) if "key:reporter" in (e.reason or "")],
            timeout_s=60,
            message="the producer's audit entry naming the reporting key",
        )
    finally:
        client.close()
    assert len(reports) == 1, reports
    assert "1 report(s)" in (reports[0].reason or ""), reports
    assert served_before not in (reports[0].masked_token or "")
