"""A third-party platform end to end, on PostgreSQL and on MariaDB: the sandbox pushes its
verify ticket and its customers' authorizations to a real `wxtoken-platform-receiver`, which
stores them in the registry; a real `wxtoken-producer` keeps the component token and each
authorizer's token and jsapi ticket in Redis and on the exchange, where `consumer_lib`
holds them; a re-authorization replaces the token at once, a revocation stops it."""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import redis
import requests

from consumer_lib import ClientSettings, TokenClient, TokenUnavailable
from consumer_lib.snapshot import SnapshotReader
from consumer_lib.wire.keys import KeyLayout
from consumer_lib.wire.kinds import TokenKind
from consumer_lib.wire.update import TokenUpdate
from ops.gateway import add_key
from ops.sandbox import SandboxConfig, SandboxPlatform, SandboxServer
from producer.platform.registry import PlatformRegistry
from producer.platform.startup import open_registry
from producer.store.audit import AuditLog
from tests.integration.gateway_stack import GatewayProc, free_port
from tests.integration.platform_db import KINDS, private_database
from tests.integration.procs import REPO_ROOT, Child, Producer
from tests.waiting import wait_for

COMPONENT = "wxcomponent0000009"
SECRET = "component-secret-9"
TOKEN = "pamtest"
KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
PLAIN_APP = "wxplainapp00000001"
AUTHORIZERS = ("wxcustomer00000001", "wxcustomer00000002")
#: Apps WeChat (the sandbox) knows that `wxtoken apps` stores in the registry.
STORED_APPS = {"wxstoredapp000001": "stored-secret-1", "wxstoredapp000002": "stored-secret-2"}


@dataclass
class PlatformStack:
    sandbox: SandboxServer
    registry: PlatformRegistry
    env: dict[str, str]
    tmp_path: Path
    redis_client: redis.Redis
    children: list[Child] = field(default_factory=list)

    def snapshot(self, app_id: str, kind: TokenKind = TokenKind.ACCESS_TOKEN) -> TokenUpdate | None:
        reader = SnapshotReader(self.redis_client, KeyLayout(self.env["WXTOKEN_KEY_PREFIX"]))
        return reader.read(app_id, kind)

    def control(self, action: str, authorizer: str) -> dict[str, object]:
        body = {"component_appid": COMPONENT, "authorizer_appid": authorizer}
        answer: dict[str, object] = requests.post(
            f"{self.sandbox.base_url}/sandbox/platform/{action}", json=body, timeout=5
        ).json()
        return answer

    def producer(self) -> Producer:
        return Producer(self.env, self.tmp_path / "producer.log")


@pytest.fixture(params=KINDS)
def platform_stack(
    request: pytest.FixtureRequest, tmp_path: Path, service_env: dict[str, str]
) -> Iterator[PlatformStack]:
    with private_database(request.param) as url:
        db_url = url.render_as_string(hide_password=False)
        key_file = tmp_path / "platform.keys"
        key_file.write_text(base64.b64encode(secrets.token_bytes(32)).decode() + "\n")
        platforms_file = tmp_path / "platforms.toml"
        platforms_file.write_text(
            f'[[platforms]]\ncomponent_appid = "{COMPONENT}"\nsecret_env = "PLATFORM_SECRET"\n'
            'token_env = "PLATFORM_TOKEN"\nencoding_aes_key_env = "PLATFORM_AES_KEY"\n'
            'authorizer_tickets = ["jsapi"]\n'
        )
        apps_file = tmp_path / "apps.toml"
        apps_file.write_text(f'[[apps]]\napp_id = "{PLAIN_APP}"\nsecret_env = "PLAIN_SECRET"\n')
        port = free_port()
        callback = f"http://127.0.0.1:{port}/wechat/platform/{COMPONENT}/events"
        platform = SandboxPlatform(COMPONENT, SECRET, TOKEN, KEY, callback_url=callback)
        sandbox_config = SandboxConfig(
            apps={PLAIN_APP: "plain-secret", **STORED_APPS},
            platforms=[platform],
            push_interval_s=600.0,
        )
        env = {
            **os.environ,
            **service_env,
            "WXTOKEN_PLATFORMS_FILE": str(platforms_file),
            "WXTOKEN_PLATFORM_DB_URL": db_url,
            "WXTOKEN_PLATFORM_KEY_FILE": str(key_file),
            "WXTOKEN_RECEIVER_PORT": str(port),
            "WXTOKEN_APPS_FILE": str(apps_file),
            "WXTOKEN_METRICS_PORT": str(free_port()),
            "WXTOKEN_PLATFORM_POLL_INTERVAL_S": "1",
            "WXTOKEN_PLATFORM_SYNC_INTERVAL_S": "2",
            "WXTOKEN_LEASE_TTL_S": "4",
            "WXTOKEN_LOG_LEVEL": "DEBUG",
            "PLATFORM_SECRET": SECRET,
            "PLATFORM_TOKEN": TOKEN,
            "PLATFORM_AES_KEY": KEY,
            "PLAIN_SECRET": "plain-secret",
        }
        receiver_log = (tmp_path / "receiver.log").open("w")
        receiver = subprocess.Popen(
            [sys.executable, "-m", "producer.platform.receiver"],
            cwd=REPO_ROOT,
            env=env,
            stdout=receiver_log,
            stderr=subprocess.STDOUT,
        )
        registry = open_registry(db_url, key_file)
        client = redis.Redis.from_url(service_env["WXTOKEN_REDIS_URL"])
        try:
            wait_for(
                lambda: _answers(f"http://127.0.0.1:{port}/readyz"),
                timeout_s=30,
                message="the receiver listening",
            )
            with SandboxServer(sandbox_config) as sandbox:
                env["WXTOKEN_WECHAT_BASE_URL"] = sandbox.base_url
                yield PlatformStack(sandbox, registry, env, tmp_path, client)
        finally:
            receiver.terminate()
            receiver.wait(timeout=10)
            receiver_log.close()
            registry.close()
            client.close()


def start_platform_gateway(stack: PlatformStack) -> Callable[[str], httpx.Response]:
    """`wxtoken-gateway` in front of the stack, one reading key for the platform's apps."""
    keys_file = stack.tmp_path / "gateway-keys.json"
    key = add_key(keys_file, "reader", apps=[f"{COMPONENT}.*", "wxcustomer*"], scopes=["read"])
    port = free_port()
    env = {
        **stack.env,
        "WXTOKEN_GATEWAY_KEYS_FILE": str(keys_file),
        "WXTOKEN_GATEWAY_PORT": str(port),
        "WXTOKEN_GATEWAY_OPERATOR": "platform-test",
        "WXTOKEN_GATEWAY_METRICS_PORT": str(free_port()),
    }
    stack.children.append(GatewayProc(env, stack.tmp_path / "gateway.log"))

    def get(path: str) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}"}
        try:
            return httpx.get(f"http://127.0.0.1:{port}{path}", headers=headers, timeout=5)
        except httpx.HTTPError:
            return httpx.Response(599)

    return get


def wxtoken(
    stack: PlatformStack, *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "ops.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
        env=stack.env,
    )
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False


def _held(tokens: TokenClient, app_id: str, kind: TokenKind = TokenKind.ACCESS_TOKEN) -> str | None:
    try:
        return tokens.get(app_id, kind=kind, timeout=0.2).value
    except TokenUnavailable:
        return None


def test_a_platform_with_authorizers_end_to_end(platform_stack: PlatformStack) -> None:
    stack = platform_stack
    first, second = (f"{COMPONENT}.{appid}" for appid in AUTHORIZERS)
    producer = stack.producer()
    settings = ClientSettings(
        verify_keys=stack.env["WXTOKEN_VERIFY_KEYS"],
        redis_url=stack.env["WXTOKEN_REDIS_URL"],
        amqp_url=stack.env["WXTOKEN_AMQP_URL"],
        exchange=stack.env["WXTOKEN_EXCHANGE"],
        key_prefix=stack.env["WXTOKEN_KEY_PREFIX"],
    )
    try:
        # The ticket pushed at the sandbox's start buys the component token.
        wait_for(
            lambda: stack.snapshot(COMPONENT) is not None,
            timeout_s=30,
            message="the component token in Redis",
        )
        with TokenClient(settings) as tokens:
            assert tokens.wait_connected(10), "client never subscribed"
            for appid in AUTHORIZERS:
                assert stack.control("authorize", appid)["pushed"] is True
            for app_id in (first, second):
                wait_for(
                    lambda app_id=app_id: stack.sandbox.state.is_valid(_held(tokens, app_id) or ""),
                    timeout_s=20,
                    message=f"{app_id}'s token held by the client and accepted upstream",
                )
                wait_for(
                    lambda app_id=app_id: _held(tokens, app_id, TokenKind.JSAPI_TICKET),
                    timeout_s=20,
                    message=f"{app_id}'s jsapi ticket held by the client",
                )
            one = stack.registry.authorizer(COMPONENT, AUTHORIZERS[0])
            assert one is not None
            assert one.state == "authorized"
            assert one.has_refresh_token

            # A re-authorization kills the old token upstream; the new one is issued at once.
            old = stack.snapshot(first)
            assert old is not None
            assert stack.control("authorize", AUTHORIZERS[0])["info_type"] == "updateauthorized"
            wait_for(
                lambda: (held := stack.snapshot(first)) is not None and held.version > old.version,
                timeout_s=15,
                message="the re-authorized token stored",
            )
            wait_for(
                lambda: _held(tokens, first) not in (None, old.value),
                timeout_s=10,
                message="the client holding the re-authorized token",
            )
            assert stack.sandbox.state.is_valid(_held(tokens, first) or "")

            # The gateway serves them like any app's, by the full app id or by the
            # customer's own appid (one platform serves it).
            gateway = start_platform_gateway(stack)
            reauthorized = _held(tokens, first)
            for asked in (first, AUTHORIZERS[0]):
                wait_for(
                    lambda asked=asked: (
                        gateway(f"/v1/apps/{asked}/access_token").status_code == 200
                    ),
                    timeout_s=20,
                    message=f"the gateway serving {asked}",
                )
                answer = gateway(f"/v1/apps/{asked}/access_token").json()
                assert answer["access_token"] == reauthorized
            ticket = gateway(f"/v1/apps/{first}/tickets/jsapi")
            assert ticket.status_code == 200, ticket.text
            assert ticket.json()["ticket"] == _held(tokens, first, TokenKind.JSAPI_TICKET)

            # A revocation: no more refreshing, the snapshot gone, the state says why.
            assert stack.control("revoke", AUTHORIZERS[1])["info_type"] == "unauthorized"
            wait_for(
                lambda: stack.snapshot(second) is None,
                timeout_s=15,
                message="the revoked authorizer's snapshot deleted",
            )
            gone = stack.registry.authorizer(COMPONENT, AUTHORIZERS[1])
            assert gone is not None
            assert gone.state == "unauthorized"
            assert not gone.has_refresh_token
        # Every callback was acted on; every authorization change is in the audit trail.
        wait_for(
            lambda: not stack.registry.unprocessed_callbacks(),
            timeout_s=10,
            message="every stored callback processed",
        )
        audit = AuditLog(stack.redis_client, KeyLayout(stack.env["WXTOKEN_KEY_PREFIX"]))
        events = {(e.event, e.app_id) for e in audit.read(limit=200)}
        assert ("authorized", first) in events
        assert ("authorized", second) in events
        assert ("reauthorized", first) in events
        assert ("unauthorized", second) in events
        assert stack.snapshot(PLAIN_APP) is not None  # the apps file's app, beside them

        # The operator's view; then a lost row recovered from WeChat's list of authorizers.
        shown = json.loads(wxtoken(stack, "platform", "status", "--json").stdout)
        assert shown["authorizers"]["authorized"] == 1
        assert shown["authorizers"]["unauthorized"] == 1
        assert shown["problems"] == []
        assert shown["component_token"]["expires_in_s"] > 0
        metrics_url = f"http://127.0.0.1:{stack.env['WXTOKEN_METRICS_PORT']}/metrics"
        labels = f'component_appid="{COMPONENT}",state="unauthorized"'
        wanted = f"wxtoken_platform_authorizers{{{labels}}} 1.0"
        wait_for(
            lambda: wanted in requests.get(metrics_url, timeout=5).text,
            timeout_s=10,
            message="the platform metrics after the revocation",
        )
        scraped = requests.get(metrics_url, timeout=5).text
        assert (
            f'wxtoken_platform_verify_ticket_age_seconds{{component_appid="{COMPONENT}"}}'
            in scraped
        )
        assert 'wxtoken_platform_pushes_processed_total{outcome="authorized"} 2.0' in scraped
        assert "wxtoken_platform_registry_up 1.0" in scraped
        stack.registry.unauthorize(COMPONENT, AUTHORIZERS[0], "test: the row lost")
        recovered = wxtoken(stack, "platform", "reconcile")
        assert f"recovered: {AUTHORIZERS[0]}" in recovered.stdout
        assert stack.registry.refresh_token(COMPONENT, AUTHORIZERS[0]) is not None
    except AssertionError:
        print((stack.tmp_path / "producer.log").read_text()[-20000:])
        print((stack.tmp_path / "receiver.log").read_text()[-5000:])
        raise
    finally:
        producer.close()
        for child in stack.children:
            child.close()


def _client_settings(stack: PlatformStack) -> ClientSettings:
    return ClientSettings(
        verify_keys=stack.env["WXTOKEN_VERIFY_KEYS"],
        redis_url=stack.env["WXTOKEN_REDIS_URL"],
        amqp_url=stack.env["WXTOKEN_AMQP_URL"],
        exchange=stack.env["WXTOKEN_EXCHANGE"],
        key_prefix=stack.env["WXTOKEN_KEY_PREFIX"],
    )


def test_a_dead_refresh_token_is_marked_once_and_not_asked_again(
    platform_stack: PlatformStack,
) -> None:
    """61023 marks the authorizer as needing re-authorization, once, audited once, and no
    refresh is asked for it afterwards."""
    stack = platform_stack
    customer = AUTHORIZERS[0]
    app_id = f"{COMPONENT}.{customer}"
    base = stack.sandbox.base_url
    producer = stack.producer()
    try:
        wait_for(lambda: stack.snapshot(COMPONENT) is not None, timeout_s=30, message="component")
        stack.control("authorize", customer)
        wait_for(lambda: stack.snapshot(app_id) is not None, timeout_s=20, message="authorizer")
        with TokenClient(_client_settings(stack)) as tokens:
            token = tokens.get_token(app_id, timeout=10)
            # WeChat refuses the refresh token from now on, and the token held is dead: a
            # service's report makes the leader check it, then refresh it.
            fault = {"mode": "refresh_token_invalid", "endpoints": ["authorizer_token"]}
            requests.post(f"{base}/sandbox/fault", json=fault, timeout=5).raise_for_status()
            owner = f"{COMPONENT}/{customer}"
            requests.post(f"{base}/sandbox/invalidate", json={"owner": owner}, timeout=5)
            assert tokens.report_invalid(app_id, token, reason="test: 40001")
            wait_for(
                lambda: (
                    (row := stack.registry.authorizer(COMPONENT, customer)) is not None
                    and row.state == "needs_reauthorization"
                ),
                timeout_s=20,
                message="the authorizer marked as needing re-authorization",
            )
        refused = stack.sandbox.state.calls("rejected/authorizer_token", customer)
        assert refused >= 1
        audit = AuditLog(stack.redis_client, KeyLayout(stack.env["WXTOKEN_KEY_PREFIX"]))
        marked = [e for e in audit.read(app_id, limit=50) if e.event == "needs_reauthorization"]
        assert len(marked) == 1
        # Not asked again: over three of the producer's roster rounds (2 s each here) no
        # call for it reaches WeChat. (Asserting an absence: there is no event to wait on.)
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:
            assert stack.sandbox.state.calls("rejected/authorizer_token", customer) == refused
            time.sleep(0.5)
        shown = json.loads(wxtoken(stack, "platform", "status", "--json", check=False).stdout)
        assert shown["needs_reauthorization"][0]["authorizer_appid"] == customer
    except AssertionError:
        print((stack.tmp_path / "producer.log").read_text()[-20000:])
        raise
    finally:
        producer.close()


def test_a_refused_ticket_restarts_the_pushes(platform_stack: PlatformStack) -> None:
    """61005 on the component token: the producer asks WeChat to push the ticket again
    (api_start_push_ticket); the new push is stored and buys the component token."""
    stack = platform_stack
    base = stack.sandbox.base_url
    wait_for(
        lambda: stack.registry.verify_ticket(COMPONENT) is not None,
        timeout_s=20,
        message="the sandbox's first ticket stored",
    )
    pushed_before = stack.sandbox.state.pushes(COMPONENT, "component_verify_ticket")[0]
    fault = {"mode": "ticket_expired", "endpoints": ["component_token"], "count": 1}
    requests.post(f"{base}/sandbox/fault", json=fault, timeout=5).raise_for_status()
    producer = stack.producer()
    try:
        wait_for(
            lambda: stack.snapshot(COMPONENT) is not None,
            timeout_s=30,
            message="the component token after the pushes restarted",
        )
        assert stack.sandbox.state.calls("rejected/component_token", COMPONENT) == 1
        assert stack.sandbox.state.pushes(COMPONENT, "component_verify_ticket")[0] > pushed_before
        log = (stack.tmp_path / "producer.log").read_text()
        assert "asking WeChat to push the ticket" in log
    finally:
        producer.close()


def test_apps_stored_in_the_registry_are_served_without_a_restart(
    platform_stack: PlatformStack,
) -> None:
    """`wxtoken apps import` and `add` while the producer runs: their tokens are fetched and
    stored within its sync interval; `remove` stops them; the apps file keeps working."""
    stack = platform_stack
    imported, added = "wxstoredapp000001", "wxstoredapp000002"
    import_file = stack.tmp_path / "more-apps.toml"
    import_file.write_text(
        f'[[apps]]\napp_id = "{imported}"\nsecret_env = "STORED_SECRET"\ntickets = ["jsapi"]\n'
    )
    producer = stack.producer()
    metrics = f"http://127.0.0.1:{stack.env['WXTOKEN_METRICS_PORT']}/metrics"
    try:
        wait_for(lambda: stack.snapshot(PLAIN_APP) is not None, timeout_s=30, message="plain")
        env = {**stack.env, "STORED_SECRET": "stored-secret-1"}
        done = subprocess.run(
            [sys.executable, "-m", "ops.cli", "apps", "import", str(import_file)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=REPO_ROOT,
            env=env,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        done = subprocess.run(
            [sys.executable, "-m", "ops.cli", "apps", "add", added, "--token-api", "classic"],
            input="stored-secret-2\n",
            capture_output=True,
            text=True,
            timeout=60,
            cwd=REPO_ROOT,
            env=stack.env,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        for app_id in (imported, added):
            wait_for(
                lambda app_id=app_id: stack.snapshot(app_id) is not None,
                timeout_s=20,
                message=f"{app_id} served without a restart",
            )
        wait_for(
            lambda: stack.snapshot(imported, TokenKind.JSAPI_TICKET) is not None,
            timeout_s=20,
            message="the imported app's ticket",
        )
        listed = wxtoken(stack, "apps", "list", "--json").stdout
        assert {json.loads(line)["app_id"] for line in listed.splitlines()} == {imported, added}
        assert "stored-secret" not in listed
        assert f'token_seconds_left{{app_id="{added}"' in requests.get(metrics, timeout=5).text
        wxtoken(stack, "apps", "remove", added)
        wait_for(
            lambda: (
                f'token_seconds_left{{app_id="{added}"' not in requests.get(metrics, timeout=5).text
            ),
            timeout_s=20,
            message="the removed app no longer served",
        )
        missing = wxtoken(stack, "apps", "remove", added, check=False)
        assert missing.returncode == 1
        assert f"no app {added} is stored" in missing.stderr
    except AssertionError:
        print((stack.tmp_path / "producer.log").read_text()[-10000:])
        raise
    finally:
        producer.close()
