"""Unit tests of `wxtoken refresh [--force]`: CliRunner, fakeredis, and a fake broker that
hands each signed request to a real `ControlHandler` (the leader), whose refresher (a real
`AppRefresher`, a recording upstream, a scripted token check) steps at once."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import fakeredis
import pytest
from click.testing import CliRunner, Result
from pydantic import SecretStr

from consumer_lib.amqp import Delivery
from consumer_lib.errors import BrokerError
from consumer_lib.settings import CommonSettings
from consumer_lib.wire.control import (
    CONTROL_DOMAIN,
    CONTROL_MESSAGE_TYPE,
    ControlAction,
    ControlRequest,
)
from consumer_lib.wire.keys import KeyLayout
from consumer_lib.wire.kinds import TokenKind
from consumer_lib.wire.signing import (
    UpdateCodec,
    generate_keypair,
    key_id,
    load_private_key,
    unseal,
)
from ops.broker import SendControl
from ops.cli import main
from ops.cli.context import OpsContext
from ops.cli.tokens import OVER_BUDGET_EXIT, REFUTED_EXIT
from producer.apps import AppConfig, TokenApi
from producer.limits.budget import RefreshBudget
from producer.messaging.control import ControlHandler
from producer.refresh.operator import OperatorRefresh
from producer.store.audit import AuditLog
from producer.store.tokens import TokenStore
from producer.store.upstream_failures import UpstreamErrors
from producer.upstream.errcodes import FailureKind
from producer.upstream.errors import UpstreamError
from producer.upstream.token_probe import ProbeVerdict
from producer.upstream.wechat import FetchedToken
from tests.conftest import FakeClock
from tests.unit._helpers import unreachable_redis
from tests.unit.producer.builders import build_refresher

PREFIX = "wxunit"
APP = "wxapp0000000001"
KEYS = KeyLayout(PREFIX)


class Fetcher:
    """A new token per call; records whether force_refresh was asked."""

    def __init__(self) -> None:
        self.forced: list[bool] = []
        self.error: UpstreamError | None = None

    def fetch(self, app: AppConfig, *, force_refresh: bool = False) -> FetchedToken:
        self.forced.append(force_refresh)
        if self.error is not None:
            raise self.error
        return FetchedToken(value=f"TOKEN-{len(self.forced):04d}-{'z' * 40}", expires_in_s=7200)


class Probe:
    """What upstream says of the held token, as the test sets it."""

    def __init__(self) -> None:
        self.verdict = ProbeVerdict.ACCEPTED
        self.checked: list[str] = []

    def check(self, app: AppConfig, token: str) -> ProbeVerdict:
        self.checked.append(token)
        return self.verdict


class Leader:
    """The leading producer's side: a refresher for APP and the control handler."""

    def __init__(
        self,
        clock: FakeClock,
        client: fakeredis.FakeRedis,
        key_file: Path,
        *,
        first_fetch_fails: UpstreamError | None = None,
    ) -> None:
        self.fetcher = Fetcher()
        self.fetcher.error = first_fetch_fails
        self.probe = Probe()
        self.audit = AuditLog(client, KEYS, clock=clock)
        self.refresher = build_refresher(
            AppConfig(app_id=APP, secret=SecretStr("s3cret"), token_api=TokenApi.STABLE),
            fetcher=self.fetcher,
            store=TokenStore(client, KEYS, UpdateCodec(signer=load_private_key(key_file))),
            producer_id="producer-a",
            budget=RefreshBudget(client, KEYS, clock=clock),
            clock=clock,
            audit=self.audit,
            probe=self.probe,  # type: ignore[arg-type]
        )
        self.refresher.step()  # the first, scheduled fetch: version stored in Redis
        self.fetcher.error = None
        self.handler = ControlHandler(
            client,
            KEYS,
            apps=[self.refresher.app],
            upstream=None,
            verify_keys=[load_private_key(key_file).public_key()],
            is_leader=lambda: True,
            producer_id="producer-a",
            audit=self.audit,
            clock=clock,
            submit_refresh=self.submit,
        )

    def submit(self, item: OperatorRefresh) -> str | None:
        if item.request.app_id != APP or item.request.kind is not TokenKind.ACCESS_TOKEN:
            return "not in this producer's apps file"
        assert self.refresher.operator_refresh(item)
        self.refresher.step()  # the scheduler's wake, at once
        return None


class FakeBroker:
    """Delivers what the CLI sends to the leader's handler, or drops it (no leader)."""

    def __init__(self, leader: Leader | None) -> None:
        self.leader = leader
        self.sent: list[bytes] = []
        self.fail_open = False

    @contextmanager
    def __call__(self, settings: CommonSettings, sender: str) -> Iterator[SendControl]:
        if self.fail_open:
            raise BrokerError("cannot reach RabbitMQ at 127.0.0.1:5672: AMQPConnectionError")

        def send(body: bytes, now_s: float) -> None:
            self.sent.append(body)
            if self.leader is not None:
                self.leader.handler.handle(
                    Delivery(body, user_id=None, app_id=sender, type=CONTROL_MESSAGE_TYPE)
                )

        yield send


@pytest.fixture
def key_files(tmp_path: Path) -> tuple[Path, Path]:
    return generate_keypair(tmp_path / "operator.key")


@pytest.fixture
def settings(key_files: tuple[Path, Path]) -> CommonSettings:
    return CommonSettings(
        signing_key_file=key_files[0],  # the producer's key here too: it signs the tokens
        redis_url="redis://127.0.0.1:6379/0",
        amqp_url="amqp://guest:guest@127.0.0.1:5672/%2F",
        exchange="wxunit.tokens",
        key_prefix=PREFIX,
    )


@pytest.fixture
def now(clock: FakeClock) -> FakeClock:
    """The fake clock at the real time: fakeredis expires keys by the real clock."""
    clock.now_s = float(int(time.time()))
    return clock


@pytest.fixture
def fake_redis() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


@pytest.fixture
def leader(now: FakeClock, fake_redis: fakeredis.FakeRedis, key_files: tuple[Path, Path]) -> Leader:
    return Leader(now, fake_redis, key_files[0])


def run(
    settings: CommonSettings,
    client: object,
    clock: FakeClock,
    broker: FakeBroker,
    *args: str,
) -> Result:
    obj = OpsContext(
        settings=settings,
        redis_client=client,  # type: ignore[arg-type]
        controller=broker,
        clock=clock,
        sleep=clock.advance,  # waiting advances the fake clock: a timeout takes no time
        operator="ops:alice@host",
    )
    return CliRunner().invoke(main, ["refresh", *args], obj=obj)


def audit_reasons(client: fakeredis.FakeRedis) -> list[tuple[str, str, str]]:
    entries = AuditLog(client, KEYS).read(APP, limit=20)
    return [(e.event, e.who, e.reason or "") for e in entries]


def test_refresh_of_a_token_upstream_accepts_is_refuted_exit_3(
    settings: CommonSettings, fake_redis: fakeredis.FakeRedis, now: FakeClock, leader: Leader
) -> None:
    """The leader checks the token upstream: accepted, nothing is fetched or spent; the CLI
    prints the verdict and exits 3 (before: "refresh requested", exit 0, nothing changed)."""
    held = leader.refresher.held
    assert held is not None
    result = run(settings, fake_redis, now, FakeBroker(leader), APP, "--reason", "drill")
    assert result.exit_code == REFUTED_EXIT, result.output
    assert result.stdout.startswith(f"refuted: {APP}/access_token: upstream accepts v")
    assert "--force" in result.stdout
    assert leader.fetcher.forced == [False]  # only the first, scheduled fetch
    assert leader.refresher.held == held
    assert held.value not in result.output
    [(event, who, reason), *_] = audit_reasons(fake_redis)
    assert (event, who) == ("refresh_request", "ops:alice@host")
    assert reason.startswith("refresh refuted: upstream accepts")


def test_refresh_of_a_token_upstream_refuses_replaces_it_exit_0(
    settings: CommonSettings, fake_redis: fakeredis.FakeRedis, now: FakeClock, leader: Leader
) -> None:
    """Upstream refuses the held token: one forced refresh, the new version printed, exit 0,
    the forced refresh audited with the operator's name."""
    leader.probe.verdict = ProbeVerdict.REFUSED
    old = leader.refresher.held
    assert old is not None
    result = run(settings, fake_redis, now, FakeBroker(leader), APP)
    assert result.exit_code == 0, result.output
    new = leader.refresher.held
    assert new is not None
    assert new.version > old.version
    assert result.stdout.startswith(f"replaced: {APP}/access_token is version {new.version}")
    assert leader.fetcher.forced == [False, True]
    events = audit_reasons(fake_redis)
    assert any(e == "forced_refresh" and "by ops:alice@host" in r for e, _, r in events)


def test_force_rotates_a_token_upstream_accepts_within_the_budgets(
    settings: CommonSettings, fake_redis: fakeredis.FakeRedis, now: FakeClock, leader: Leader
) -> None:
    """`--force` skips the check and replaces a token upstream accepts (a leaked one); a
    second `--force` right after is over budget (WeChat's 30 s spacing), exit 4."""
    old = leader.refresher.held
    assert old is not None
    result = run(settings, fake_redis, now, FakeBroker(leader), APP, "--force", "--reason", "leak")
    assert result.exit_code == 0, result.output
    new = leader.refresher.held
    assert new is not None
    assert new.version > old.version
    assert leader.probe.checked == []
    assert leader.fetcher.forced == [False, True]
    [forced] = [r for e, _, r in audit_reasons(fake_redis) if e == "forced_refresh"]
    assert "forced by ops:alice@host" in forced
    assert "leak" in forced
    now.advance(5)
    again = run(settings, fake_redis, now, FakeBroker(leader), APP, "--force")
    assert again.exit_code == OVER_BUDGET_EXIT, again.output
    assert again.stdout.startswith(f"over budget: {APP}/access_token not replaced")
    assert "again in" in again.stdout  # when it may be asked again
    assert leader.refresher.held == new


def test_a_failed_fetch_is_printed_exit_1(
    settings: CommonSettings, fake_redis: fakeredis.FakeRedis, now: FakeClock, leader: Leader
) -> None:
    """Upstream fails the forced fetch: "failed", its error, exit 1; the token is kept."""
    held = leader.refresher.held

    def failing(app: AppConfig, *, force_refresh: bool = False) -> FetchedToken:
        raise UpstreamError("errcode -1 (system busy)", kind=FailureKind.TRANSIENT, errcode=-1)

    leader.fetcher.fetch = failing  # type: ignore[method-assign]
    result = run(settings, fake_redis, now, FakeBroker(leader), APP, "--force")
    assert result.exit_code == 1, result.output
    assert "failed: " in result.stderr
    assert "the fetch failed: errcode -1 (system busy)" in result.stderr
    assert leader.refresher.held == held


def test_a_version_replaced_since_it_was_read_is_done(
    settings: CommonSettings, fake_redis: fakeredis.FakeRedis, now: FakeClock, leader: Leader
) -> None:
    """The leader holds a newer version than the operator saw: done, nothing fetched."""
    leader.probe.verdict = ProbeVerdict.REFUSED
    seen = leader.refresher.held
    assert seen is not None
    request = ControlRequest(
        action=ControlAction.REFRESH,
        app_id=APP,
        request_id="ab" * 16,
        operator="ops:alice@host",
        issued_at=now(),
        seen_version=seen.version - 1,
    )
    answers: list[str] = []
    item = OperatorRefresh(request, "key", lambda verdict: answers.append(verdict.message))
    assert leader.refresher.operator_refresh(item)
    leader.refresher.step()
    assert answers == [
        f"already replaced: v{seen.version} is current (you saw v{seen.version - 1})"
    ]
    assert leader.fetcher.forced == [False]


def test_the_request_is_signed_and_names_the_kind_and_version(
    settings: CommonSettings,
    fake_redis: fakeredis.FakeRedis,
    now: FakeClock,
    leader: Leader,
    key_files: tuple[Path, Path],
) -> None:
    """What goes out is an envelope signed by the operator's key, with the version seen
    and never the token."""
    broker = FakeBroker(leader)
    run(settings, fake_redis, now, broker, APP)
    [body] = broker.sent
    public = load_private_key(key_files[0]).public_key()
    payload, _ = unseal(
        body, {key_id(public): public}, what="control request", domain=CONTROL_DOMAIN
    )
    data = json.loads(payload)
    assert data["action"] == "refresh"
    held = leader.refresher.held
    assert held is not None
    assert data["seen_version"] == held.version
    assert "kind" not in data  # the access token: left out, as for clear_quota
    assert held.value.encode() not in body


def test_no_signing_key_is_a_configuration_error(
    settings: CommonSettings, fake_redis: fakeredis.FakeRedis, now: FakeClock, leader: Leader
) -> None:
    """Without WXTOKEN_SIGNING_KEY_FILE nothing is sent: one line, exit 2."""
    broker = FakeBroker(leader)
    unsigned = settings.model_copy(update={"signing_key_file": None})
    result = run(unsigned, fake_redis, now, broker, APP)
    assert result.exit_code == 2
    assert "WXTOKEN_SIGNING_KEY_FILE" in result.stderr
    assert broker.sent == []


def test_no_leader_times_out_saying_so(
    settings: CommonSettings, fake_redis: fakeredis.FakeRedis, now: FakeClock, leader: Leader
) -> None:
    """Nobody answers and no lease is held: exit 1 naming the empty leader key."""
    result = run(settings, fake_redis, now, FakeBroker(None), APP, "--timeout", "5")
    assert result.exit_code == 1
    assert "no answer in 5 s" in result.stderr
    assert f"no producer leads ({PREFIX}:leader is empty)" in result.stderr


def test_an_app_the_leader_does_not_serve_is_refused_exit_1(
    settings: CommonSettings,
    fake_redis: fakeredis.FakeRedis,
    now: FakeClock,
    leader: Leader,
    key_files: tuple[Path, Path],
) -> None:
    """A credential the leader has no refresher for is refused with the reason."""
    store = TokenStore(fake_redis, KEYS, UpdateCodec(signer=load_private_key(key_files[0])))
    held = leader.refresher.held
    assert held is not None
    assert store.write(held.model_copy(update={"kind": TokenKind.JSAPI_TICKET})).written
    result = run(settings, fake_redis, now, FakeBroker(leader), APP, "--kind", "jsapi")
    assert result.exit_code == 1
    assert "refused" in result.stderr
    assert "apps file" in result.stderr


def test_refresh_without_a_stored_token_exits_1_and_sends_nothing(
    settings: CommonSettings, fake_redis: fakeredis.FakeRedis, now: FakeClock
) -> None:
    """With nothing stored for the app there is nothing to refresh: one line, exit 1."""
    broker = FakeBroker(None)
    result = run(settings, fake_redis, now, broker, APP)
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        f"Error: no token stored for {APP}/access_token (never written, or expired)"
    ]
    assert broker.sent == []


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        pytest.param(["bad app!"], "APP_ID", id="bad-app-id"),
        pytest.param(["x" * 65], "APP_ID", id="long-app-id"),
        pytest.param([APP, "--kind", "x"], "--kind", id="kind"),
        pytest.param([APP, "--reason", "r" * 257], "--reason", id="reason"),
        pytest.param([APP, "--timeout", "0"], "--timeout", id="timeout"),
        pytest.param([], "APP_ID", id="no-app-id"),
    ],
)
def test_refresh_refuses_bad_arguments_with_exit_2(
    settings: CommonSettings,
    fake_redis: fakeredis.FakeRedis,
    now: FakeClock,
    leader: Leader,
    args: list[str],
    complaint: str,
) -> None:
    """Bad arguments are usage errors (exit 2, one line) and send nothing."""
    broker = FakeBroker(leader)
    result = run(settings, fake_redis, now, broker, *args)
    assert result.exit_code == 2, result.output
    assert complaint in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert broker.sent == []


def test_refresh_with_broker_unreachable_is_one_line_exit_1(
    settings: CommonSettings, fake_redis: fakeredis.FakeRedis, now: FakeClock, leader: Leader
) -> None:
    """An unreachable broker is one `Error:` line and exit 1."""
    broker = FakeBroker(leader)
    broker.fail_open = True
    result = run(settings, fake_redis, now, broker, APP)
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        "Error: cannot reach RabbitMQ at 127.0.0.1:5672: AMQPConnectionError"
    ]


def test_refresh_with_redis_unreachable_is_one_line_exit_1(
    settings: CommonSettings, now: FakeClock
) -> None:
    """With Redis down the stored token cannot be read: one `Error: Redis:` line, exit 1."""
    broker = FakeBroker(None)
    result = run(settings, unreachable_redis(), now, broker, APP)
    assert result.exit_code == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("Error: Redis: ")
    assert broker.sent == []


def test_refresh_of_an_invalid_stored_value_exits_1(
    settings: CommonSettings, fake_redis: fakeredis.FakeRedis, now: FakeClock
) -> None:
    """Garbage in Redis is named in one line, and nothing is sent."""
    fake_redis.set(KEYS.token(APP), b"not json")
    broker = FakeBroker(None)
    result = run(settings, fake_redis, now, broker, APP)
    assert result.exit_code == 1
    assert "Redis holds an invalid value" in result.stderr
    assert broker.sent == []


def test_refresh_with_none_stored_after_a_failed_fetch_fetches_now(
    settings: CommonSettings,
    fake_redis: fakeredis.FakeRedis,
    now: FakeClock,
    key_files: tuple[Path, Path],
) -> None:
    """Issue 19 item 1: no token stored and a failed fetch recorded (a 40164 at refresh
    time): `refresh` names the failure instead of refusing with "no token stored", and the
    leader tries the fetch at once instead of at the end of its backoff."""
    failed = UpstreamError(
        "errcode 40164: invalid ip 1.2.3.4", kind=FailureKind.CONFIG, errcode=40164
    )
    leader = Leader(now, fake_redis, key_files[0], first_fetch_fails=failed)
    assert leader.refresher.held is None
    UpstreamErrors(fake_redis, KEYS, clock=lambda: now.now_s - 12).record(
        APP, TokenKind.ACCESS_TOKEN, failed
    )
    result = run(settings, fake_redis, now, FakeBroker(leader), APP)
    assert result.exit_code == 0, result.output
    assert "(none stored, " in result.stderr, result.stderr
    assert "12s ago" in result.stderr, result.stderr
    assert result.stdout.startswith(f"replaced: {APP}/access_token is version "), result.stdout
    held = leader.refresher.held
    assert held is not None
    assert held.is_valid_at(now.now_s)
    assert leader.fetcher.forced == [False, False]  # the failed fetch, then the one asked for
