"""`wxtoken-gateway` over real HTTP, in front of a real producer, Redis and RabbitMQ."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import redis
from click.testing import CliRunner

from consumer_lib.wire.keys import KeyLayout
from ops.cli import main
from producer.store.audit import AuditLog
from tests.waiting import wait_for

from .gateway_stack import RunningGateway, gateway

__all__ = ["gateway"]


def _path(app_id: str, suffix: str = "") -> str:
    return f"/v1/apps/{app_id}/access_token{suffix}"


def _audit(gw: RunningGateway, app_id: str) -> AuditLog:
    client = redis.Redis.from_url(gw.env["WXTOKEN_REDIS_URL"])
    return AuditLog(client, KeyLayout(gw.env["WXTOKEN_KEY_PREFIX"]))


def test_read_answers_the_stored_token(gateway: RunningGateway) -> None:
    """GET returns the token, version and expiry the producer stored."""
    app_id = gateway.stack.app_ids[0]
    answer = gateway.get(_path(app_id))
    assert answer.status_code == 200
    body = answer.json()
    stored = gateway.stack.snapshot(app_id)
    assert stored is not None
    assert body["version"] <= stored.version  # the producer may have refreshed since
    if body["version"] == stored.version:
        assert body["access_token"] == stored.value
    assert 0 < body["expires_in"] <= 30
    assert answer.headers["cache-control"] == "no-store"


def test_the_origin_plain_route(gateway: RunningGateway) -> None:
    """GET /accesstoken?appid= answers the bare token as text; without appid it asks."""
    app_id = gateway.stack.app_ids[0]
    plain = gateway.get(f"/accesstoken?appid={app_id}")
    assert plain.status_code == 200
    assert plain.headers["content-type"].startswith("text/plain")
    current = gateway.get(_path(app_id)).json()["access_token"]
    assert plain.text in (current, gateway.stack.snapshot(app_id).value)  # type: ignore[union-attr]
    several = gateway.get("/accesstoken")
    assert several.status_code == 404
    assert "appid" in several.json()["reason"]


def test_keys_and_scopes(gateway: RunningGateway) -> None:
    """401 without or with a wrong key (never echoed), 403 for a missing scope or app."""
    app_id = gateway.stack.app_ids[0]
    missing = gateway.get(_path(app_id), role=None)
    assert missing.status_code == 401
    assert missing.json()["error"] == "unauthorized"
    forged = "wxgw_" + "A" * 43
    wrong = gateway.get(_path(app_id), role=None, headers={"Authorization": f"Bearer {forged}"})
    assert wrong.status_code == 401
    assert forged not in wrong.text
    basic = gateway.get(_path(app_id), role=None, headers={"Authorization": "Basic Zm9vOmJhcg=="})
    assert basic.status_code == 401
    assert gateway.get(_path(app_id), role="stranger").status_code == 403
    no_scope = gateway.post(
        _path(app_id, ":report"), role="reader", json={"access_token": "x" * 20}
    )
    assert no_scope.status_code == 403
    assert "report" in no_scope.json()["reason"]
    assert gateway.keys["reader"] not in no_scope.text


def test_unknown_app_is_404_and_known_without_token_is_503(gateway: RunningGateway) -> None:
    """An app never stored is 404; one Redis knows but holds no token is 503 with Retry-After."""
    assert gateway.get(_path("wxe2e99999999999")).status_code == 404
    assert gateway.get(_path("wxe2e%20bad")).status_code == 404
    client = redis.Redis.from_url(gateway.env["WXTOKEN_REDIS_URL"])
    layout = KeyLayout(gateway.env["WXTOKEN_KEY_PREFIX"])
    client.sadd(layout.known, KeyLayout.member("wxe2e00000000042"))
    answer = wait_for(
        lambda: (r := gateway.get(_path("wxe2e00000000042"))).status_code == 503 and r,
        timeout_s=10,
        message="503 once Redis lists the app",
    )
    assert int(answer.headers["retry-after"]) >= 1
    assert "wxe2e00000000042" in answer.json()["reason"]


def test_rate_limit(gateway: RunningGateway) -> None:
    """A key over its rate limit (0.5/s) gets 429 with Retry-After; other keys do not."""
    app_id = gateway.stack.app_ids[0]
    assert gateway.get(_path(app_id), role="slow").status_code == 200
    answers = [gateway.get(_path(app_id), role="slow") for _ in range(20)]
    limited = [a for a in answers if a.status_code == 429]
    assert limited, [a.status_code for a in answers]
    assert int(limited[0].headers["retry-after"]) >= 1
    assert limited[0].json()["error"] == "rate_limited"
    assert gateway.get(_path(app_id), role="reader").status_code == 200


def test_bad_bodies_change_nothing(gateway: RunningGateway) -> None:
    """Malformed bodies are 422, oversize ones 413; the token served stays the same."""
    app_id = gateway.stack.app_ids[0]
    before = gateway.stack.snapshot(app_id)
    for body in (
        b"",
        b"{",
        b"[]",
        b'{"access_token": 5, "expires_in": 60}',
        b'{"access_token": "a b", "expires_in": 60}',
        b'{"access_token": "abcdefgh", "expires_in": 0}',
        b'{"access_token": "abcdefgh", "expires_in": 60, "extra": 1}',
    ):
        answer = gateway.post(
            _path(app_id), content=body, headers={"Content-Type": "application/json"}
        )
        assert answer.status_code == 422, body
        assert answer.json()["error"] == "invalid_body"
    huge = gateway.post(_path(app_id), content=b'{"access_token": "' + b"a" * 10_000 + b'"}')
    assert huge.status_code == 413
    after = gateway.stack.snapshot(app_id)
    assert after is not None
    assert before is not None
    assert after.source == before.source == "refresh"


def test_report_refreshes_through_the_producer(gateway: RunningGateway) -> None:
    """Reporting the served token, once upstream refuses it, gets a new version from the
    producer; the producer's audit entry names the key (the gateway writes none)."""
    app_id = gateway.stack.app_ids[0]
    served = gateway.get(_path(app_id)).json()
    assert gateway.stack.sandbox.state.invalidate(app_id)  # the producer checks before it refreshes
    answer = gateway.post(
        _path(app_id, ":report"), role="reporter", json={"access_token": served["access_token"]}
    )
    assert answer.status_code == 202
    assert answer.json()["reported"] is True
    wait_for(
        lambda: gateway.get(_path(app_id)).json()["version"] > served["version"],
        timeout_s=15,
        message="a new version after the report",
    )
    entries = _audit(gateway, app_id).read(app_id, limit=50)
    requests = [e for e in entries if e.event == "refresh_request"]
    assert any("/key:reporter" in (e.reason or "") for e in requests), requests
    assert not any("/key:" in e.who for e in requests)  # written by the producer
    assert all(served["access_token"] not in (e.masked_token or "") for e in entries)


def test_override_is_signed_stored_published_and_audited(gateway: RunningGateway) -> None:
    """An override by an `override` key is served by the gateway itself and by Redis."""
    app_id = gateway.stack.app_ids[1]
    token = "OVERRIDE-" + "z" * 40
    answer = gateway.post(
        _path(app_id), json={"access_token": token, "expires_in": 600, "reason": "outage"}
    )
    assert answer.status_code == 201, answer.text
    version = answer.json()["version"]
    wait_for(
        lambda: gateway.get(_path(app_id)).json()["version"] >= version,
        timeout_s=10,
        message="the override pushed to the gateway",
    )
    stored = gateway.stack.snapshot(app_id)
    assert stored is not None
    assert stored.version >= version
    entries = _audit(gateway, app_id).read(app_id, limit=20)
    override = next(e for e in entries if e.event == "override")
    assert override.who == "gateway-test/key:operator"
    assert token not in (override.masked_token or "")


def test_health(gateway: RunningGateway) -> None:
    """/healthz says alive, /readyz ready, a status only (issue 18, item 10: it used to
    count the tokens held); neither needs a key. /metrics is not on the API's port."""
    assert gateway.get("/healthz", role=None).json() == {"status": "alive"}
    ready = gateway.get("/readyz", role=None)
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready"}
    assert gateway.get("/metrics", role=None).status_code == 404
    assert gateway.get("/metrics", role="operator").status_code == 404


def test_keys_file_changes_take_effect_without_restart(gateway: RunningGateway) -> None:
    """A key added to the file works within seconds; a removed one is refused. The gateway
    reads the file through its mounted directory while `wxtoken gateway-key` replaces it by
    rename on the host (as in compose)."""
    keys_file = gateway.host_keys_file
    assert Path(gateway.env["WXTOKEN_GATEWAY_KEYS_FILE"]).resolve() == keys_file.resolve()
    assert Path(gateway.env["WXTOKEN_GATEWAY_KEYS_FILE"]) != keys_file
    path = _path(gateway.stack.app_ids[0])
    runner = CliRunner()
    added = runner.invoke(
        main, ["gateway-key", "add", "late", "--apps", "wxe2e*", "--file", str(keys_file)]
    )
    assert added.exit_code == 0, added.output
    late = {"Authorization": f"Bearer {added.stdout.strip()}"}
    wait_for(
        lambda: gateway.get(path, role=None, headers=late).status_code == 200,
        timeout_s=15,
        message="the new key accepted",
    )
    removed = runner.invoke(main, ["gateway-key", "remove", "late", "--file", str(keys_file)])
    assert removed.exit_code == 0
    wait_for(
        lambda: gateway.get(path, role=None, headers=late).status_code == 401,
        timeout_s=15,
        message="the removed key refused",
    )
    assert gateway.get(path).status_code == 200


def test_a_broken_keys_file_stops_the_gateway_with_one_line(
    gateway: RunningGateway, tmp_path: Path
) -> None:
    """A malformed keys file at start is exit 2 and one line naming the file."""
    broken = tmp_path / "broken-keys.json"
    broken.write_text('{"keys": [{"name": "x"}]}')
    done = subprocess.run(
        [sys.executable, "-m", "ops.gateway"],
        env={**gateway.env, "WXTOKEN_GATEWAY_KEYS_FILE": str(broken)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert "keys file" in done.stderr
    assert str(broken) in done.stderr


def test_a_key_removed_by_an_in_place_rewrite_keeping_the_mtime_is_refused(
    gateway: RunningGateway,
) -> None:
    """The file rewritten in place without the key, its mtime set back to what it was (a
    coarse clock, `cp -p`, a restored copy): the gateway sees the new content and refuses
    the key within its watch period."""
    keys_file = gateway.host_keys_file
    path = _path(gateway.stack.app_ids[0])
    added = CliRunner().invoke(
        main, ["gateway-key", "add", "leaked", "--apps", "wxe2e*", "--file", str(keys_file)]
    )
    assert added.exit_code == 0, added.output
    leaked = {"Authorization": f"Bearer {added.stdout.strip()}"}
    wait_for(
        lambda: gateway.get(path, role=None, headers=leaked).status_code == 200,
        timeout_s=15,
        message="the new key accepted",
    )
    before = keys_file.stat()
    document = json.loads(keys_file.read_text())
    document["keys"] = [k for k in document["keys"] if k["name"] != "leaked"]
    with keys_file.open("r+") as handle:  # the same inode, rewritten
        handle.write(json.dumps(document, indent=2) + "\n")
        handle.truncate()
    os.utime(keys_file, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert keys_file.stat().st_mtime_ns == before.st_mtime_ns
    assert keys_file.stat().st_ino == before.st_ino
    wait_for(
        lambda: gateway.get(path, role=None, headers=leaked).status_code == 401,
        timeout_s=15,
        message="the removed key refused",
    )
    assert gateway.get(path).status_code == 200
