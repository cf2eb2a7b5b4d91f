"""The shipped Redis users (deploy/redis/users.template.acl), rendered by deploy/redis/render_acl.py
and loaded by a private `redis-server --aclfile`: each role does its job through our own code
and is refused everything else.

The file names the key prefix `wxtoken`, so these tests use it, on a server of their own.
"""

from __future__ import annotations

import hashlib
import importlib.util
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner
from pydantic import SecretStr

from consumer_lib.snapshot import SnapshotReader
from consumer_lib.wire.keys import KeyLayout
from consumer_lib.wire.kinds import Platform
from consumer_lib.wire.refresh_request import RefreshRequest
from consumer_lib.wire.update import TokenKind
from ops.cli import main as cli_main
from ops.cli.context import OpsContext
from ops.gateway import GatewaySettings, add_key
from ops.gateway._app import ReportBody
from ops.gateway._wiring import make_gateway
from producer.app_config import AppConfig
from producer.apps import TokenApi
from producer.leadership.lease import Leadership
from producer.limits.budget import RefreshBudget
from producer.limits.ticket_budget import TicketBudget
from producer.store.audit import AuditLog
from producer.store.functions import library_code, library_version, load_library
from producer.store.tokens import StoreError, TokenStore
from producer.store.upstream_failures import UpstreamErrors
from producer.upstream.errcodes import FailureKind
from producer.upstream.errors import UpstreamError
from producer.upstream.wechat import FetchedToken
from tests.conftest import FakeClock
from tests.integration.servers import HOST, RedisServer
from tests.unit._helpers import make_update
from tests.unit.producer.builders import build_refresher

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
    "wxtoken-admin": "admin-password-0123456789abc",
    "wxtoken-receiver": "receiver-password-0123456789",
}
#: What an attacker with a role's login would run: never returns, Redis answers BUSY to all.
RUNAWAY_LUA = "while true do end"
#: The error of a role that finds no library and may not load it: it names the admin step.
NOT_LOADED = r"FunctionsNotLoaded: .* run `wxtoken redis-functions`"


def _acl_server(tmp_path: Path) -> RedisServer:
    """A private Redis started with the shipped ACL file, rendered with the passwords above."""
    output = tmp_path / "users.acl"
    environ = {render_acl.password_variable(u): p for u, p in PASSWORDS.items()}
    assert render_acl.main(["--output", str(output)], environ) == 0
    assert set(PASSWORDS) == set(render_acl.template_users(render_acl.TEMPLATE.read_text()))
    server = RedisServer(tmp_path, extra_args=["--aclfile", str(output)])
    server.start()  # PING needs no login: the default user may PING
    return server


@pytest.fixture(scope="module")
def acl_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """The shipped ACL file, and the wxtoken functions loaded by the admin step."""
    server = _acl_server(tmp_path_factory.mktemp("acl"))
    try:
        admin = _login(server, "wxtoken-admin")
        try:
            assert load_library(admin)
        finally:
            admin.close()
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


@pytest.fixture
def admin(acl_server: RedisServer) -> Iterator[redis.Redis]:
    client = _login(acl_server, "wxtoken-admin")
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
    # A refresh's two round trips: the snapshot with a version, the write with its entry.
    found, version = store.read_with_version(APP, TokenKind.ACCESS_TOKEN, now_s=now_s)
    assert found == update
    update = make_update(app_id=APP, version=version, issued_at=now_s)
    entry = AuditLog(producer, KEYS).entry("refresh", APP, who="p-acl", version=version)
    written = store.write(update, fence_owner=lease.fence_owner, audit=entry)
    assert (written.written, written.audit_error) == (True, None)
    assert AuditLog(producer, KEYS).read(APP, limit=1)[0].version == version
    budget = RefreshBudget(producer, KEYS)
    assert budget.try_spend(APP, TokenApi.CLASSIC).allowed
    assert "refresh 1 of" in budget.try_spend(APP, TokenApi.STABLE).reason
    corp = AppConfig(
        app_id="wwaclagent",
        secret=SecretStr("s" * 32),
        platform=Platform.WECOM,
        token_api=TokenApi.WECOM,
        corp_id="wwaclcorp",
        agent_id="1000002",
        tickets=(TokenKind.CORP_JSAPI_TICKET,),
    )
    # WeCom's hourly ticket counts (sorted sets) are kept in Redis, not in this process.
    assert TicketBudget(producer, KEYS).try_spend(corp, TokenKind.CORP_JSAPI_TICKET).allowed
    assert producer.zcard(KEYS.ticket_budget_corp("wwaclcorp")) == 1
    # Writes confirmed by replicas (FCALL, ROLE and WAIT in a pipeline) are allowed too;
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
    # `wxtoken set`'s write adds its audit entry in the same call.
    entry = AuditLog(ops, KEYS).entry("override", APP, who="ops", version=version)
    written = store.write(update, audit=entry)
    assert (written.written, written.audit_error) == (True, None)
    assert AuditLog(ops, KEYS).read(APP, limit=1)[0].version == version
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
    # Issue 18 item 7: the leader spaces one app's clears (SET NX PX, PTTL, DEL on failure).
    spacing = KEYS.control_spacing("clear_quota", APP)
    assert producer.set(spacing, "acl-req-1", nx=True, px=60_000)
    assert not producer.set(spacing, "acl-req-2", nx=True, px=60_000)
    assert 0 < producer.pttl(spacing) <= 60_000
    _refused(lambda: ops.delete(spacing))
    _refused(lambda: consumer.delete(spacing))
    assert producer.delete(spacing) == 1


def test_gateway_reads_but_writes_nothing_not_even_the_audit_trail(
    producer: redis.Redis, ops: redis.Redis, gateway: redis.Redis
) -> None:
    """wxtoken-gateway reads snapshots like a consumer; it may not append to, read, erase
    (`XADD ... MAXLEN 0`) or delete the audit trail (issue 18 item 5: the producer audits its
    reports), write a token, a version or the known set, allocate a version through the
    store's script, run any script, read the lease or the budgets, or list or write the
    upstream failures (it reads one app's, HGET, for its 503)."""
    store = TokenStore(producer, KEYS)
    now_s = time.time()
    version = store.next_version(APP, TokenKind.ACCESS_TOKEN, now_s=now_s + 180)
    update = make_update(app_id=APP, version=version, issued_at=now_s)
    assert store.write(update).written
    reader = SnapshotReader(gateway, KEYS)
    assert reader.read(APP) == update
    assert (APP, TokenKind.ACCESS_TOKEN) in reader.known()
    AuditLog(ops, KEYS).record("override", APP, who="ops:alice@h", version=version)
    audit_key = AuditLog(ops, KEYS).key
    length = len(AuditLog(ops, KEYS).read(limit=100_000))
    _refused(lambda: gateway.execute_command("XADD", audit_key, "MAXLEN", "0", "*", "f", "v"))
    _refused(lambda: gateway.xadd(audit_key, {"event": "report"}))
    AuditLog(gateway, KEYS).record("report", APP, who="wxtoken-gateway/key:acl-test")
    entries = AuditLog(ops, KEYS).read(limit=100_000)
    assert len(entries) == length, "the trail is as it was"
    assert any(e.who == "ops:alice@h" for e in entries)
    assert not any(e.who == "wxtoken-gateway/key:acl-test" for e in entries)
    token_key = KEYS.token(APP, TokenKind.ACCESS_TOKEN)
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


def _no_own_lua(client: redis.Redis) -> None:
    """Every way of running Lua of one's own is refused: EVAL, SCRIPT LOAD + EVALSHA (the
    pair that ran `while true do end` as wxtoken-ops), EVAL_RO, FUNCTION LOAD."""
    _refused(lambda: client.eval(RUNAWAY_LUA, 0))
    _refused(lambda: client.execute_command("EVAL_RO", RUNAWAY_LUA, 0))  # type: ignore[no-untyped-call]
    _refused(lambda: client.script_load(RUNAWAY_LUA))
    sha = hashlib.sha1(RUNAWAY_LUA.encode(), usedforsecurity=False).hexdigest()
    _refused(lambda: client.evalsha(sha, 0))
    runaway = (
        f"#!lua name=runaway\nredis.register_function('runaway', function() {RUNAWAY_LUA} end)"
    )
    _refused(lambda: client.function_load(runaway, replace=True))
    _refused(lambda: client.function_load(library_code(), replace=True))
    _refused(lambda: client.function_flush())
    _refused(lambda: client.function_delete("wxtoken"))


@pytest.mark.parametrize(
    "user", ["wxtoken-producer", "wxtoken-ops", "wxtoken-consumer", "wxtoken-gateway"]
)
def test_no_role_runs_lua_of_its_own(acl_server: RedisServer, user: str) -> None:
    """Each service role runs only the loaded library's functions, never Lua it brings."""
    client = _login(acl_server, user)
    try:
        _no_own_lua(client)
        assert client.ping(), "Redis is not busy"
    finally:
        client.close()


def test_ops_calls_only_the_stores_functions(ops: redis.Redis) -> None:
    """wxtoken-ops may FCALL the store's version allocation and compare-and-set, not the
    lease's, the budgets' or the discard of a value: each is refused before it runs."""
    _refused(lambda: ops.fcall("wxtoken_lease_acquire", 2, KEYS.leader, KEYS.leader_epoch, "x"))
    _refused(lambda: ops.fcall("wxtoken_lease_release", 1, KEYS.leader, "x"))
    _refused(lambda: ops.fcall("wxtoken_budget_spend", 0))
    _refused(lambda: ops.fcall("wxtoken_ticket_budget_spend", 0))
    _refused(lambda: ops.fcall("wxtoken_store_delete_if_equal", 1, KEYS.token(APP), "x"))


@pytest.mark.parametrize("user", ["wxtoken-consumer", "wxtoken-gateway"])
def test_readers_call_no_function(acl_server: RedisServer, user: str) -> None:
    """Consumers and the gateway run no function, not even the store's."""
    client = _login(acl_server, user)
    try:
        _refused(lambda: client.fcall("wxtoken_version", 0))
        _refused(lambda: client.fcall("wxtoken_store_compare_and_set", 0))
    finally:
        client.close()


def test_admin_loads_the_library_and_may_kill_a_runaway_script(admin: redis.Redis) -> None:
    """wxtoken-admin loads the library (the admin step, idempotent), may SCRIPT KILL and
    FUNCTION KILL (NOTBUSY here: nothing runs, but no NOPERM), and reads no key, calls no
    function but the version and runs no Lua of its own."""
    assert not load_library(admin), "already loaded: nothing to do"
    assert admin.fcall("wxtoken_version", 0) == library_version().encode()
    for kill in (("SCRIPT", "KILL"), ("FUNCTION", "KILL")):
        with pytest.raises(redis.exceptions.ResponseError, match="NOTBUSY"):
            admin.execute_command(*kill)  # type: ignore[no-untyped-call]
    _refused(lambda: admin.get(KEYS.token(APP)))
    _refused(lambda: admin.set(KEYS.leader, "1|admin"))
    _refused(lambda: admin.fcall("wxtoken_lease_acquire", 2, KEYS.leader, KEYS.leader_epoch, "x"))
    _refused(lambda: admin.eval(RUNAWAY_LUA, 0))
    _refused(lambda: admin.script_load(RUNAWAY_LUA))
    _refused(lambda: admin.flushall())


def test_without_the_admin_step_a_role_says_what_to_run(tmp_path: Path) -> None:
    """On a Redis without the library, the producer (which may not load it) fails with an
    error naming the admin step; after `wxtoken redis-functions` as wxtoken-admin it leads."""
    server = _acl_server(tmp_path)
    producer = _login(server, "wxtoken-producer")
    admin = _login(server, "wxtoken-admin")
    try:
        lease = Leadership(
            producer, lease_key=KEYS.leader, epoch_key=KEYS.leader_epoch, owner="p0", ttl_s=5
        )
        with pytest.raises(StoreError, match=NOT_LOADED):
            TokenStore(producer, KEYS).next_version(APP, TokenKind.ACCESS_TOKEN, now_s=0)
        lease.tick()
        assert not lease.is_leader
        result = CliRunner().invoke(
            cli_main, ["redis-functions"], obj=OpsContext(redis_client=admin)
        )
        assert result.exit_code == 0, result.output
        assert f"wxtoken functions {library_version()}: loaded" in result.output
        lease.tick()
        assert lease.is_leader
        again = CliRunner().invoke(
            cli_main, ["redis-functions"], obj=OpsContext(redis_client=admin)
        )
        assert "already loaded" in again.output
    finally:
        producer.close()
        admin.close()
        server.kill()


class _Fetcher:
    """A new token per call, as upstream hands them out."""

    def __init__(self) -> None:
        self.calls = 0

    def fetch(self, app: AppConfig, *, force_refresh: bool = False) -> FetchedToken:
        self.calls += 1
        return FetchedToken(value=f"FLOOD-{self.calls:04d}-{'f' * 40}", expires_in_s=7200)


def test_a_report_flood_leaves_earlier_overrides_in_the_trail(
    acl_server: RedisServer,
    producer: redis.Redis,
    ops: redis.Redis,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Issue 18 item 5: a `report` key at the gateway's default 50/s for 206 s (10,300
    reports) once pushed every earlier entry out of the 10,000-entry trail, one XADD per
    report. Now the gateway (logged in as wxtoken-gateway) writes no entry, and the leader
    that receives the reports sums them up (at most one entry per event and credential a
    minute): the override recorded before the flood is still there."""
    app_id, reports, per_s = "wxacl00000000flood", 10_300, 50
    clock = FakeClock(time.time())
    ops_audit = AuditLog(ops, KEYS)
    ops_audit.record("override", app_id, who="ops:alice@h", reason="before the flood")
    before = len(ops_audit.read(limit=100_000))

    # The gateway's side: every report goes through `Gateway.report`.
    keys_file = tmp_path / "gateway-keys.json"
    presented = add_key(keys_file, "flood", apps=["wx*"], scopes=["read", "report"])
    settings = GatewaySettings(
        redis_url=f"redis://wxtoken-gateway:{PASSWORDS['wxtoken-gateway']}@{HOST}:{acl_server.port}/0",
        amqp_url="amqp://guest:guest@127.0.0.1:1/%2F",
        gateway_keys_file=keys_file,
        insecure_accept_unsigned=True,
    )
    gw = make_gateway(settings)
    key = gw.keys.find(presented)
    assert key is not None

    # The leader's side: the same reports, as `RefreshRequest`s naming the key.
    store = TokenStore(producer, KEYS)
    refresher = build_refresher(
        AppConfig(app_id=app_id, secret=SecretStr("s"), token_api=TokenApi.CLASSIC),
        fetcher=_Fetcher(),
        store=store,
        producer_id="producer-acl",
        budget=RefreshBudget(producer, KEYS, clock=clock),
        audit=AuditLog(producer, KEYS, clock=clock),
        clock=clock,
    )
    refresher.step()
    for n in range(reports):
        held = refresher.held
        assert held is not None
        gw.view._on_update(held)
        gw.report(key, app_id, TokenKind.ACCESS_TOKEN, ReportBody(access_token=held.value))
        refresher.request_refresh(
            RefreshRequest.for_token(
                app_id, held.value, requester=f"{gw.operator}/key:flood", now_s=clock()
            )
        )
        clock.advance(1 / per_s)
        if n % per_s == 0:
            refresher.step()
    refresher.step()
    entries = ops_audit.read(limit=100_000)
    assert any(e.event == "override" and e.reason == "before the flood" for e in entries)
    added = len(entries) - before
    minutes = reports / per_s / 60
    with capsys.disabled():
        print(
            f"\n[audit flood] {reports} gateway reports at {per_s}/s: {added} audit entries "
            f"added ({', '.join(sorted({e.event for e in entries[:added]}))}); the earlier "
            "override kept"
        )
    # refresh_request, request_over_budget and forced_refresh: each at most once a minute.
    assert 1 <= added <= 3 * (int(minutes) + 2), added
    summed = [e for e in entries if e.event == "refresh_request" and e.app_id == app_id]
    assert summed
    assert all("key:flood" in (e.reason or "") for e in summed)
    assert not any(e.who.endswith("key:flood") for e in entries)  # none from the gateway
    gw.client.close()


def test_the_platform_hint_goes_from_the_receiver_to_the_producer_and_nowhere_else(
    acl_server: RedisServer, producer: redis.Redis, consumer: redis.Redis
) -> None:
    """wxtoken-receiver may publish on the platform channel and nothing else; the producer
    may subscribe to it; a consumer may do neither."""
    from producer.platform.notice import StoredNotice, events_channel

    receiver = _login(acl_server, "wxtoken-receiver")
    channel = events_channel("wxtoken")
    subscription = producer.pubsub(ignore_subscribe_messages=True)
    try:
        subscription.subscribe(channel)
        notice = StoredNotice("wxcomponent0000001", "a" * 40)
        assert receiver.publish(channel, notice.encode()) == 1
        message = None
        deadline = time.monotonic() + 5
        while message is None and time.monotonic() < deadline:
            message = subscription.get_message(timeout=0.5)
        assert message is not None
        assert StoredNotice.decode(message["data"]) == notice
        _refused(lambda: receiver.publish("wxtoken:other", b"x"))
        _refused(lambda: receiver.get(KEYS.token(APP, TokenKind.ACCESS_TOKEN)))
        _refused(lambda: receiver.set("wxtoken:anything", b"x"))
        _refused(lambda: consumer.publish(channel, b"x"))
    finally:
        subscription.close()
        receiver.close()
