"""The shipped Redis users (deploy/redis/users.template.acl), rendered by deploy/redis/render_acl.py
and loaded by a private `redis-server --aclfile`: each role does its job through our own code
and is refused everything else.

The file names the key prefix `wxtoken`, so these tests use it, on a server of their own.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from consumer_lib.snapshot import SnapshotReader
from consumer_lib.wire.keys import KeyLayout
from consumer_lib.wire.update import TokenKind
from producer.apps import TokenApi
from producer.audit import AuditLog
from producer.budget import RefreshBudget
from producer.errcodes import FailureKind
from producer.lease import Leadership
from producer.store import StoreError, TokenStore
from producer.upstream import UpstreamError
from producer.upstream_errors import UpstreamErrors
from tests.integration.servers import HOST, RedisServer
from tests.unit._helpers import make_update

ROOT = Path(__file__).resolve().parents[2]


def _load_render_acl() -> Any:
    """deploy/redis/render_acl.py, imported from its path (it is no package)."""
    spec = importlib.util.spec_from_file_location("render_acl", ROOT / "deploy/redis/render_acl.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


render_acl = _load_render_acl()
KEYS = KeyLayout("wxtoken")
APP = "wxacl0000000001"
PASSWORDS = {
    "wxtoken-producer": "producer-password-0123456789",
    "wxtoken-ops": "ops-password-0123456789abcd",
    "wxtoken-consumer": "consumer-password-0123456789",
    "wxtoken-gateway": "gateway-password-0123456789",
}


@pytest.fixture(scope="module")
def acl_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A private Redis with the shipped ACL file, rendered with the passwords above."""
    tmp_path = tmp_path_factory.mktemp("acl")
    output = tmp_path / "users.acl"
    environ = {render_acl.password_variable(u): p for u, p in PASSWORDS.items()}
    assert render_acl.main(["--output", str(output)], environ) == 0
    assert set(PASSWORDS) == set(render_acl.template_users(render_acl.TEMPLATE.read_text()))
    server = RedisServer(tmp_path, extra_args=["--aclfile", str(output)])
    server.start()  # PING needs no login: the default user may PING
    try:
        yield server
    finally:
        server.kill()  # SHUTDOWN is refused to every user, as it should be


def _login(server: RedisServer, user: str, password: str | None = None) -> redis.Redis:
    return redis.Redis(
        host=HOST,
        port=server.port,
        username=user,
        password=password or PASSWORDS[user],
        socket_timeout=5,
    )


@pytest.fixture
def producer(acl_server: RedisServer) -> Iterator[redis.Redis]:
    client = _login(acl_server, "wxtoken-producer")
    yield client
    client.close()


@pytest.fixture
def ops(acl_server: RedisServer) -> Iterator[redis.Redis]:
    client = _login(acl_server, "wxtoken-ops")
    yield client
    client.close()


@pytest.fixture
def consumer(acl_server: RedisServer) -> Iterator[redis.Redis]:
    client = _login(acl_server, "wxtoken-consumer")
    yield client
    client.close()


@pytest.fixture
def gateway(acl_server: RedisServer) -> Iterator[redis.Redis]:
    client = _login(acl_server, "wxtoken-gateway")
    yield client
    client.close()


def _refused(call: object) -> None:
    assert callable(call)
    with pytest.raises(redis.exceptions.NoPermissionError):
        call()


def test_default_user_may_only_ping(acl_server: RedisServer) -> None:
    """Without a login Redis answers PING (the healthcheck) and refuses everything else."""
    anonymous = acl_server.client()
    try:
        assert anonymous.ping()
        for call in (
            lambda: anonymous.get("wxtoken:token:x"),
            lambda: anonymous.set("wxtoken:leader", "1|squatter"),
            lambda: anonymous.keys("*"),
            lambda: anonymous.eval("return 1", 0),
        ):
            with pytest.raises((redis.exceptions.NoPermissionError, redis.AuthenticationError)):
                call()
    finally:
        anonymous.close()


def test_wrong_password_is_refused(acl_server: RedisServer) -> None:
    """A known user name with another password does not log in."""
    client = _login(acl_server, "wxtoken-producer", "not-the-password-0123456789")
    try:
        with pytest.raises(redis.AuthenticationError):
            client.ping()
    finally:
        client.close()


def test_producer_does_its_job(producer: redis.Redis) -> None:
    """Lease, versions, compare-and-set, budget and audit all work as wxtoken-producer."""
    lease = Leadership(
        producer, lease_key=KEYS.leader, epoch_key=KEYS.leader_epoch, owner="p-acl", ttl_s=5
    )
    lease.tick()
    assert lease.is_leader
    store = TokenStore(producer, KEYS)
    now_s = time.time()
    version = store.next_version(APP, TokenKind.ACCESS_TOKEN, now_s=now_s)
    update = make_update(app_id=APP, version=version, issued_at=now_s)
    assert store.write(update, fence_owner=lease.fence_owner).written
    assert store.read(APP) == update
    budget = RefreshBudget(producer, KEYS)
    assert budget.try_spend(APP, TokenApi.CLASSIC).allowed
    assert "refresh 1 of" in budget.try_spend(APP, TokenApi.STABLE).reason
    # Writes confirmed by replicas (WAIT, ROLE, SCRIPT EXISTS in a pipeline) are allowed too;
    # this server has no replica, so they confirm on their own.
    replicated = TokenStore(producer, KEYS, replicas=1)
    second = make_update(app_id=APP, version=version + 1, issued_at=now_s)
    assert replicated.write(second, fence_owner=lease.fence_owner).confirmed
    AuditLog(producer, KEYS).record("refresh", APP, who="p-acl", version=version)
    assert AuditLog(producer, KEYS).read(APP, limit=5)
    lease.release()


def test_producer_is_refused_administration_and_foreign_keys(producer: redis.Redis) -> None:
    """No EVAL, FLUSHALL, CONFIG, KEYS, ACL, SHUTDOWN, CLIENT LIST, and no key outside wxtoken:*."""
    _refused(lambda: producer.eval("return 1", 0))
    _refused(lambda: producer.flushall())
    _refused(lambda: producer.config_get("*"))
    _refused(lambda: producer.keys("*"))
    _refused(lambda: producer.acl_list())
    _refused(lambda: producer.execute_command("SHUTDOWN", "NOSAVE"))  # type: ignore[no-untyped-call]
    _refused(lambda: producer.client_list())
    _refused(lambda: producer.set("other:key", "x"))
    script = producer.register_script("return redis.call('SET', KEYS[1], 'x')")
    _refused(lambda: script(keys=["other:key"]))


def test_ops_writes_overrides_but_not_the_lease(producer: redis.Redis, ops: redis.Redis) -> None:
    """wxtoken-ops writes a token through the store and reads everything, but cannot take,
    squat or delete the lease, nor touch the budgets, even from a script."""
    lease = Leadership(
        producer, lease_key=KEYS.leader, epoch_key=KEYS.leader_epoch, owner="p-ops", ttl_s=5
    )
    lease.tick()
    store = TokenStore(ops, KEYS)
    now_s = time.time()
    version = store.next_version(APP, TokenKind.ACCESS_TOKEN, now_s=now_s + 60)
    update = make_update(app_id=APP, version=version, issued_at=now_s, value="OPS-" + "o" * 30)
    assert store.write(update).written
    assert (
        TokenStore(ops, KEYS, replicas=1)
        .write(
            make_update(app_id=APP, version=version + 1, issued_at=now_s, value="OPS-" + "p" * 30)
        )
        .confirmed
    )
    assert SnapshotReader(ops, KEYS).known() == [(APP, TokenKind.ACCESS_TOKEN)]
    assert ops.get(KEYS.leader) is not None  # status may read who leads
    AuditLog(ops, KEYS).record("override", APP, who="ops", version=version)
    _refused(lambda: ops.set(KEYS.leader, "999999|squatter"))
    _refused(lambda: ops.delete(KEYS.leader))
    _refused(lambda: ops.incr(KEYS.leader_epoch))
    _refused(lambda: ops.set(f"{KEYS.prefix}:budget:{APP}:classic:last", "0"))
    script = ops.register_script("return redis.call('SET', KEYS[1], ARGV[1])")
    _refused(lambda: script(keys=[KEYS.leader], args=["999999|squatter"]))
    _refused(lambda: ops.eval("return 1", 0))
    _refused(lambda: ops.flushall())
    lease.release()


def test_consumer_reads_snapshots_and_nothing_else(
    producer: redis.Redis, consumer: redis.Redis
) -> None:
    """wxtoken-consumer reads snapshots (GET, MGET, PTTL, the known set) and may not write,
    run scripts, read the lease or any other key."""
    store = TokenStore(producer, KEYS)
    now_s = time.time()
    version = store.next_version(APP, TokenKind.JSAPI_TICKET, now_s=now_s + 120)
    update = make_update(app_id=APP, version=version, issued_at=now_s, kind=TokenKind.JSAPI_TICKET)
    assert store.write(update).written
    reader = SnapshotReader(consumer, KEYS)
    assert reader.read(APP, TokenKind.JSAPI_TICKET) == update
    assert (APP, TokenKind.JSAPI_TICKET) in reader.known()
    assert (
        reader.read_many([(APP, TokenKind.JSAPI_TICKET)])[(APP, TokenKind.JSAPI_TICKET)] == update
    )
    assert consumer.pttl(KEYS.token(APP, TokenKind.JSAPI_TICKET)) > 0
    token_key = KEYS.token(APP, TokenKind.JSAPI_TICKET)
    _refused(lambda: consumer.set(token_key, "forged"))
    _refused(lambda: consumer.delete(token_key))
    _refused(lambda: consumer.expire(token_key, 1))
    _refused(lambda: consumer.get(KEYS.leader))
    _refused(lambda: consumer.get(KEYS.version(APP, TokenKind.JSAPI_TICKET)))
    _refused(lambda: consumer.set(KEYS.leader, "999999|squatter"))
    _refused(lambda: consumer.xrevrange(f"{KEYS.prefix}:audit"))
    _refused(lambda: consumer.eval("return 1", 0))
    _refused(lambda: consumer.script_load("return 1"))
    _refused(lambda: consumer.evalsha("0" * 40, 0))
    _refused(lambda: consumer.publish("wxtoken", "x"))
    _refused(lambda: consumer.flushall())
    _refused(lambda: consumer.keys("*"))
    assert reader.read(APP, TokenKind.JSAPI_TICKET) == update, "nothing changed"


def test_quota_clear_keys_work_for_their_roles_only(
    producer: redis.Redis, ops: redis.Redis, consumer: redis.Redis
) -> None:
    """The producer records an upstream failure and a control request's replay mark and
    answer; `wxtoken status` (ops) reads the failures and `quota clear` (ops) the answer;
    ops may not forge either, and a consumer reads none of them."""
    failures = UpstreamErrors(producer, KEYS)
    failures.record(
        APP,
        TokenKind.ACCESS_TOKEN,
        UpstreamError("not whitelisted", kind=FailureKind.CONFIG, errcode=40164, caller_ip=HOST),
    )
    seen, answer = KEYS.control_seen("acl-req-1"), KEYS.control_answer("acl-req-1")
    assert producer.set(seen, "ops-key", nx=True, ex=60)
    assert producer.set(answer, '{"result":"cleared"}', nx=True, ex=60)
    read = UpstreamErrors(ops, KEYS).read_all()
    assert read[(APP, TokenKind.ACCESS_TOKEN)].caller_ip == HOST
    assert ops.get(answer) == b'{"result":"cleared"}'
    _refused(lambda: ops.hset(KEYS.upstream_errors, "x:access_token", "{}"))
    _refused(lambda: ops.set(answer, "forged"))
    _refused(lambda: ops.delete(seen))
    _refused(lambda: consumer.hgetall(KEYS.upstream_errors))
    _refused(lambda: consumer.get(answer))
    _refused(lambda: consumer.set(seen, "x"))


def test_gateway_reads_and_audits_but_writes_no_token(
    producer: redis.Redis, ops: redis.Redis, gateway: redis.Redis
) -> None:
    """wxtoken-gateway reads snapshots like a consumer and appends its report entries to the
    audit trail (read back by ops with the key's name); it may not read or delete the trail,
    write a token, a version or the known set, allocate a version through the store's script,
    run any script, read the lease or the budgets, or list or write the upstream failures (it
    reads one app's, HGET, for its 503)."""
    store = TokenStore(producer, KEYS)
    now_s = time.time()
    version = store.next_version(APP, TokenKind.ACCESS_TOKEN, now_s=now_s + 180)
    update = make_update(app_id=APP, version=version, issued_at=now_s)
    assert store.write(update).written
    reader = SnapshotReader(gateway, KEYS)
    assert reader.read(APP) == update
    assert (APP, TokenKind.ACCESS_TOKEN) in reader.known()
    audit = AuditLog(gateway, KEYS)
    audit.record("report", APP, who="wxtoken-gateway/key:acl-test", version=version)
    entries = AuditLog(ops, KEYS).read(APP, limit=20)
    assert any(e.who == "wxtoken-gateway/key:acl-test" for e in entries)
    token_key = KEYS.token(APP, TokenKind.ACCESS_TOKEN)
    audit_key = AuditLog(ops, KEYS).key
    _refused(lambda: gateway.xrevrange(audit_key))  # the trail is write-only to it
    _refused(lambda: gateway.delete(audit_key))
    _refused(lambda: gateway.xadd(f"{KEYS.prefix}:other", {"x": "1"}))
    _refused(lambda: gateway.set(token_key, "forged"))
    _refused(lambda: gateway.delete(token_key))
    _refused(lambda: gateway.sadd(KEYS.known, "wxforged:access_token"))
    _refused(lambda: gateway.incr(KEYS.version(APP, TokenKind.ACCESS_TOKEN)))
    with pytest.raises(StoreError):  # the override path needs wxtoken-ops' rights
        TokenStore(gateway, KEYS).next_version(APP, TokenKind.ACCESS_TOKEN, now_s=now_s)
    forged = make_update(app_id=APP, version=version + 1, issued_at=now_s, value="GW-" + "g" * 30)
    with pytest.raises(StoreError):
        TokenStore(gateway, KEYS).write(forged)
    _refused(lambda: gateway.eval("return 1", 0))
    _refused(lambda: gateway.evalsha("0" * 40, 0))
    _refused(lambda: gateway.script_load("return 1"))
    _refused(lambda: gateway.get(KEYS.leader))
    _refused(lambda: gateway.get(f"{KEYS.prefix}:budget:{APP}:classic:last"))
    _refused(lambda: gateway.hgetall(KEYS.upstream_errors))
    _refused(lambda: gateway.hset(KEYS.upstream_errors, f"{APP}:access_token", "{}"))
    UpstreamErrors(producer, KEYS).record(
        APP, TokenKind.ACCESS_TOKEN, UpstreamError("HTTP 502", kind=FailureKind.TRANSIENT)
    )
    failure = UpstreamErrors(gateway, KEYS).read_one(APP, TokenKind.ACCESS_TOKEN)
    assert failure is not None
    assert failure.message == "HTTP 502"
    _refused(lambda: gateway.publish("wxtoken", "x"))
    _refused(lambda: gateway.flushall())
    _refused(lambda: gateway.keys("*"))
    assert reader.read(APP) == update, "nothing changed"
