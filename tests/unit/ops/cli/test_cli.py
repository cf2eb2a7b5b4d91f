"""Unit tests of the `wxtoken` ops CLI: fakeredis, a recording publisher, an injected clock."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import fakeredis
import pytest
from click.testing import CliRunner, Result

from consumer_lib.errors import BrokerError
from consumer_lib.settings import CommonSettings
from consumer_lib.wire.keys import KeyLayout
from consumer_lib.wire.signing import generate_keypair
from consumer_lib.wire.update import TokenKind, TokenSource, TokenUpdate
from ops import _format
from ops.cli import main
from ops.cli.context import OpsContext, Publish
from ops.cli.observe import STATUS_UNHEALTHY
from producer.store.tokens import TokenStore
from tests.conftest import FakeClock

PREFIX = "wxunit"
APP = "wxapp0000000001"
OLD_TOKEN = "OLD_token_0123456789abcdefghijklmnop"
NEW_TOKEN = "NEW_token_9876543210zyxwvutsrqponmlk"
KEYS = KeyLayout(PREFIX)
SETTINGS = CommonSettings(
    insecure_accept_unsigned=True,  # signing has tests of its own
    redis_url="redis://127.0.0.1:6379/0",
    amqp_url="amqp://guest:guest@127.0.0.1:5672/%2F",
    exchange="wxunit.tokens",
    key_prefix=PREFIX,
)


class FakePublisher:
    """Stands in for the broker: records each opening and each published update."""

    def __init__(self, *, fail_open: bool = False, fail_publish: bool = False) -> None:
        self.fail_open = fail_open
        self.fail_publish = fail_publish
        self.opened = 0
        self.published: list[tuple[TokenUpdate, float]] = []

    @contextmanager
    def __call__(self, settings: CommonSettings, sender: str) -> Iterator[Publish]:
        if self.fail_open:
            raise BrokerError("cannot reach RabbitMQ at 127.0.0.1:5672: AMQPConnectionError")
        self.opened += 1

        def publish(update: TokenUpdate, now_s: float) -> None:
            if self.fail_publish:
                raise BrokerError("publishing to wxunit.tokens: NackError")
            self.published.append((update, now_s))

        yield publish


@pytest.fixture
def now(clock: FakeClock) -> FakeClock:
    """The fake clock set to the real time: fakeredis expires keys by the real clock."""
    clock.now_s = float(int(time.time()))
    return clock


@pytest.fixture
def server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


@pytest.fixture
def fake_redis(server: fakeredis.FakeServer) -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis(server=server)


@pytest.fixture
def publisher() -> FakePublisher:
    return FakePublisher()


@pytest.fixture
def store(fake_redis: fakeredis.FakeRedis) -> TokenStore:
    return TokenStore(fake_redis, KEYS)


def make_update(now_s: float, **changes: Any) -> TokenUpdate:
    fields: dict[str, Any] = {
        "app_id": APP,
        "value": OLD_TOKEN,
        "issued_at": now_s - 600,
        "expires_at": now_s + 6600,
        "version": 5,
        "source": TokenSource.REFRESH,
        "producer_id": "producer-a",
    }
    fields.update(changes)
    return TokenUpdate(**fields)


@pytest.fixture
def seeded(store: TokenStore, now: FakeClock) -> TokenUpdate:
    """A refresh token the producer stored for APP ten minutes ago."""
    update = make_update(now.now_s)
    assert store.write(update).written
    return update


def run(
    args: list[str],
    *,
    redis_client: Any,
    publisher: FakePublisher,
    clock: FakeClock,
    stdin: str | None = None,
) -> Result:
    context = OpsContext(
        settings=SETTINGS,
        redis_client=redis_client,
        publisher=publisher,
        clock=clock,
        operator="ops:tester@host",
    )
    return CliRunner().invoke(main, args, input=stdin, obj=context)


def hold_lease(client: fakeredis.FakeRedis, value: str = "1|producer-a#1") -> None:
    """A producer holds the lease (`{epoch}|{owner}`)."""
    client.set(KEYS.leader, value)


def redis_state(client: fakeredis.FakeRedis) -> dict[str, Any]:
    return {
        "token": client.get(KEYS.token(APP)),
        "version": client.get(KEYS.version(APP)),
        "known": client.smembers(KEYS.known),
    }


# --------------------------------------------------------------------------- set
def test_set_stores_and_publishes_an_override(
    fake_redis: fakeredis.FakeRedis,
    store: TokenStore,
    publisher: FakePublisher,
    now: FakeClock,
    seeded: TokenUpdate,
) -> None:
    """A piped token is stored as an override and published once with the printed version."""
    result = run(
        ["set", APP, "--expires-in", "3600", "--reason", "producer down"],
        redis_client=fake_redis,
        publisher=publisher,
        clock=now,
        stdin=NEW_TOKEN + "\n",
    )
    assert result.exit_code == 0, result.output
    version = int(result.stdout.strip().splitlines()[-1].rsplit(" ", 1)[-1])
    stored = store.read(APP)
    assert stored is not None
    assert stored.value == NEW_TOKEN
    assert stored.version == version > seeded.version
    assert stored.source == TokenSource.OVERRIDE
    assert stored.reason == "producer down"
    assert stored.producer_id == "ops:tester@host"
    assert stored.expires_at == now.now_s + 3600
    assert [update for update, _ in publisher.published] == [stored]
    assert NEW_TOKEN not in result.output


def test_set_from_a_clock_8_hours_fast_is_refused_and_changes_nothing(
    fake_redis: fakeredis.FakeRedis,
    publisher: FakePublisher,
    now: FakeClock,
    seeded: TokenUpdate,
) -> None:
    """`wxtoken set --expires-in 600` on a machine 8 h fast (issue 18, item 3): before, it
    stored an override the producer held for 8 h 10 min; now its clock is checked against
    Redis's `TIME` first: a non-zero exit naming the skew, nothing written or published."""
    before = redis_state(fake_redis)
    now.advance(8 * 3600)
    result = run(
        ["set", APP, "--expires-in", "600"],
        redis_client=fake_redis,
        publisher=publisher,
        clock=now,
        stdin=NEW_TOKEN + "\n",
    )
    assert result.exit_code != 0
    assert re.search(r"clock is \+28[78]\d\d\.\d s from Redis's", result.output)
    assert "nothing was written or published" in result.output
    assert redis_state(fake_redis) == before
    assert publisher.published == []


def test_set_can_introduce_a_new_app_when_allowed(
    fake_redis: fakeredis.FakeRedis, store: TokenStore, publisher: FakePublisher, now: FakeClock
) -> None:
    """With --allow-new-app an app Redis never held is stored, published and becomes known."""
    result = run(
        ["set", "wxbrandnew", "--expires-in", "60", "--allow-new-app"],
        redis_client=fake_redis,
        publisher=publisher,
        clock=now,
        stdin=NEW_TOKEN,
    )
    assert result.exit_code == 0, result.output
    assert ("wxbrandnew", TokenKind.ACCESS_TOKEN) in store.reader.known()
    assert len(publisher.published) == 1


@pytest.mark.parametrize(
    ("args", "stdin", "complaint"),
    [
        pytest.param([APP, "--expires-in", "60"], "", "no token", id="empty-stdin"),
        pytest.param([APP, "--expires-in", "60"], "  \n\n", "no token", id="blank-stdin"),
        pytest.param([APP, "--expires-in", "60"], "abc def\n", "whitespace", id="whitespace"),
        pytest.param([APP, "--expires-in", "60"], "one\ntwo\n", "whitespace", id="two-lines"),
        pytest.param([APP, "--expires-in", "60"], "a" * 513, "longer than 512", id="513-chars"),
        pytest.param([APP, "--expires-in", "60"], "tok\x07en", "non-printable", id="control"),
        pytest.param([APP, "--expires-in", "0"], NEW_TOKEN, "--expires-in", id="expires-0"),
        pytest.param([APP, "--expires-in", "-5"], NEW_TOKEN, "--expires-in", id="expires-neg"),
        pytest.param([APP, "--expires-in", "86401"], NEW_TOKEN, "--expires-in", id="over-a-day"),
        pytest.param([APP, "--expires-in", "abc"], NEW_TOKEN, "--expires-in", id="expires-abc"),
        pytest.param([APP], NEW_TOKEN, "--expires-in", id="expires-missing"),
        pytest.param(["bad app!", "--expires-in", "60"], NEW_TOKEN, "APP_ID", id="bad-app-id"),
        pytest.param(["x" * 65, "--expires-in", "60"], NEW_TOKEN, "APP_ID", id="long-app-id"),
        pytest.param(
            ["wxnever", "--expires-in", "60"], NEW_TOKEN, "--allow-new-app", id="unknown-app"
        ),
        pytest.param(
            [APP, "--expires-in", "60", "--reason", "r" * 257], NEW_TOKEN, "--reason", id="reason"
        ),
        pytest.param([APP, "--expires-in", "60", "--kind", "x"], NEW_TOKEN, "--kind", id="kind"),
    ],
)
def test_set_refuses_bad_input_and_changes_nothing(
    fake_redis: fakeredis.FakeRedis,
    publisher: FakePublisher,
    now: FakeClock,
    seeded: TokenUpdate,
    args: list[str],
    stdin: str,
    complaint: str,
) -> None:
    """Bad input is a usage error (exit 2): nothing written, nothing published, no token shown."""
    before = redis_state(fake_redis)
    result = run(
        ["set", *args], redis_client=fake_redis, publisher=publisher, clock=now, stdin=stdin
    )
    assert result.exit_code == 2, result.output
    assert complaint in result.stderr
    assert "Traceback" not in result.output
    assert redis_state(fake_redis) == before
    assert publisher.opened == 0
    assert publisher.published == []
    if len(stdin.strip()) > 3:
        assert stdin.strip() not in result.output


def test_set_with_broker_unreachable_writes_nothing(
    fake_redis: fakeredis.FakeRedis, now: FakeClock, seeded: TokenUpdate
) -> None:
    """When RabbitMQ cannot be reached the override fails (exit 1) before Redis is touched."""
    before = redis_state(fake_redis)
    result = run(
        ["set", APP, "--expires-in", "60"],
        redis_client=fake_redis,
        publisher=FakePublisher(fail_open=True),
        clock=now,
        stdin=NEW_TOKEN,
    )
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        "Error: cannot reach RabbitMQ at 127.0.0.1:5672: AMQPConnectionError"
    ]
    assert redis_state(fake_redis) == before


def test_set_with_a_real_unreachable_broker_is_one_line_and_writes_nothing(
    fake_redis: fakeredis.FakeRedis, now: FakeClock, seeded: TokenUpdate
) -> None:
    """The real broker helper turns pika's connection failure into one line without secrets."""
    before = redis_state(fake_redis)
    settings = SETTINGS.model_copy(update={"amqp_url": "amqp://guest:sekrit@127.0.0.1:1/%2F"})
    context = OpsContext(settings=settings, redis_client=fake_redis, clock=now, operator="ops:t")
    result = CliRunner().invoke(
        main, ["set", APP, "--expires-in", "60"], input=NEW_TOKEN, obj=context
    )
    assert result.exit_code == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("Error: cannot reach RabbitMQ at 127.0.0.1:1")
    assert "sekrit" not in result.output
    assert redis_state(fake_redis) == before


@pytest.mark.parametrize("allow_new_app", [False, True], ids=["known-check", "version"])
def test_set_with_redis_unreachable_publishes_nothing(
    server: fakeredis.FakeServer,
    fake_redis: fakeredis.FakeRedis,
    publisher: FakePublisher,
    now: FakeClock,
    seeded: TokenUpdate,
    allow_new_app: bool,
) -> None:
    """When Redis is down the override fails with one line (exit 1) and nothing is published."""
    server.connected = False
    args = ["set", APP, "--expires-in", "60"] + (["--allow-new-app"] if allow_new_app else [])
    result = run(args, redis_client=fake_redis, publisher=publisher, clock=now, stdin=NEW_TOKEN)
    assert result.exit_code == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("Error: Redis: ")
    assert publisher.published == []


def test_set_refused_by_a_newer_stored_version_publishes_nothing(
    fake_redis: fakeredis.FakeRedis,
    store: TokenStore,
    publisher: FakePublisher,
    now: FakeClock,
    seeded: TokenUpdate,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """If a newer token lands between version allocation and write, the override says so."""
    monkeypatch.setattr(TokenStore, "next_version", lambda *_args, **_kwargs: 3)
    result = run(
        ["set", APP, "--expires-in", "60"],
        redis_client=fake_redis,
        publisher=publisher,
        clock=now,
        stdin=NEW_TOKEN,
    )
    assert result.exit_code == 1
    assert "already holds version 5" in result.stderr
    assert store.read(APP) == seeded
    assert publisher.published == []


def test_set_reports_a_failed_publish_after_storing(
    fake_redis: fakeredis.FakeRedis, store: TokenStore, now: FakeClock, seeded: TokenUpdate
) -> None:
    """A publish that fails after the write exits 1 and says the token is in Redis only."""
    result = run(
        ["set", APP, "--expires-in", "60"],
        redis_client=fake_redis,
        publisher=FakePublisher(fail_publish=True),
        clock=now,
        stdin=NEW_TOKEN,
    )
    assert result.exit_code == 1
    assert "publishing failed" in result.stderr
    stored = store.read(APP)
    assert stored is not None
    assert stored.value == NEW_TOKEN


# --------------------------------------------------------------------------- get
def test_get_shows_the_update_with_the_token_masked(
    fake_redis: fakeredis.FakeRedis, publisher: FakePublisher, now: FakeClock, seeded: TokenUpdate
) -> None:
    """`get` shows version, source, producer, time left and age, never the whole token."""
    result = run(["get", APP], redis_client=fake_redis, publisher=publisher, clock=now)
    assert result.exit_code == 0, result.output
    assert OLD_TOKEN not in result.output
    assert seeded.masked in result.stdout
    for text in ("version:  5", "source:   refresh", "producer: producer-a", "in 6600s", "600s"):
        assert text in result.stdout


def test_get_reveal_prints_the_whole_token(
    fake_redis: fakeredis.FakeRedis, publisher: FakePublisher, now: FakeClock, seeded: TokenUpdate
) -> None:
    """`get --reveal` is the one way to see the whole token."""
    result = run(["get", APP, "--reveal"], redis_client=fake_redis, publisher=publisher, clock=now)
    assert result.exit_code == 0
    assert f"token:    {OLD_TOKEN}" in result.stdout


@pytest.mark.parametrize("reveal", [False, True])
def test_get_json_is_the_public_dict_with_timings(
    fake_redis: fakeredis.FakeRedis,
    publisher: FakePublisher,
    now: FakeClock,
    seeded: TokenUpdate,
    reveal: bool,
) -> None:
    """`get --json` prints one object, the token masked unless --reveal."""
    args = ["get", APP, "--json"] + (["--reveal"] if reveal else [])
    result = run(args, redis_client=fake_redis, publisher=publisher, clock=now)
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["value"] == (OLD_TOKEN if reveal else seeded.masked)
    assert data["version"] == 5
    assert data["seconds_left"] == 6600
    assert data["age_s"] == 600


def test_get_without_a_stored_token_exits_1(
    fake_redis: fakeredis.FakeRedis, publisher: FakePublisher, now: FakeClock
) -> None:
    """`get` of an app with nothing stored says so in one line and exits 1."""
    result = run(["get", APP], redis_client=fake_redis, publisher=publisher, clock=now)
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        f"Error: no token stored for {APP}/access_token (never written, or expired)"
    ]


def test_get_of_an_invalid_stored_value_names_the_problem(
    fake_redis: fakeredis.FakeRedis, publisher: FakePublisher, now: FakeClock
) -> None:
    """A stored value that is not a valid update is one line naming the problem, exit 1."""
    fake_redis.set(KEYS.token(APP), json.dumps({"app_id": APP, "value": OLD_TOKEN}))
    result = run(["get", APP], redis_client=fake_redis, publisher=publisher, clock=now)
    assert result.exit_code == 1
    [line] = result.stderr.strip().splitlines()
    assert "invalid" in line
    assert "version" in line
    assert OLD_TOKEN not in result.output


# --------------------------------------------------------------------------- status
@pytest.fixture
def mixed_snapshot(fake_redis: fakeredis.FakeRedis, seeded: TokenUpdate) -> None:
    """APP is fine, wxgone expired (known, no key), wxbroken holds garbage."""
    fake_redis.sadd(KEYS.known, "wxgone:access_token", "wxbroken:access_token")
    fake_redis.set(KEYS.token("wxbroken"), b"{not json")


@pytest.mark.usefixtures("mixed_snapshot")
def test_status_table_shows_missing_and_invalid_entries(
    fake_redis: fakeredis.FakeRedis, publisher: FakePublisher, now: FakeClock
) -> None:
    """`status` is an aligned table with one row per app; bad entries are flagged, not fatal
    (but make the exit status 3)."""
    result = run(["status"], redis_client=fake_redis, publisher=publisher, clock=now)
    assert result.exit_code == STATUS_UNHEALTHY, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == list(_format.STATUS_COLUMNS)
    rows = {line.split()[0]: line for line in lines[1:]}
    assert rows[APP].split()[2:7] == ["ok", "5", "refresh", "6600s", "600s"]
    assert rows["wxgone"].split()[2] == "missing"
    assert rows["wxbroken"].split()[2] == "invalid"
    for column in ("STATE", "VERSION", "LEFT", "PRODUCER"):
        start = lines[0].index(column)
        assert all(line[start - 2 : start] == "  " and line[start] != " " for line in lines)
    assert OLD_TOKEN not in result.output


@pytest.mark.usefixtures("seeded")
def test_status_warns_about_a_producer_clock_skewed_from_redis(
    fake_redis: fakeredis.FakeRedis, publisher: FakePublisher, now: FakeClock
) -> None:
    """A producer that measured its clock 300 s from Redis's is named on stderr; one within
    5 s is not; garbage in the hash is skipped."""
    fake_redis.hset(KEYS.clock_skew, "prod-a", json.dumps({"skew_s": -300.2, "at": now() - 20}))
    fake_redis.hset(KEYS.clock_skew, "prod-b", json.dumps({"skew_s": 0.4, "at": now() - 20}))
    fake_redis.hset(KEYS.clock_skew, "prod-c", b"{garbage")
    hold_lease(fake_redis)
    result = run(["status"], redis_client=fake_redis, publisher=publisher, clock=now)
    assert result.exit_code == 0, result.output
    assert "producer prod-a's clock is -300.2 s from Redis's" in result.stderr
    assert "prod-b" not in result.stderr
    assert "prod-c" not in result.stderr


@pytest.mark.usefixtures("mixed_snapshot")
def test_status_json_lists_every_entry_without_tokens(
    fake_redis: fakeredis.FakeRedis, publisher: FakePublisher, now: FakeClock
) -> None:
    """`status --json` is a list of objects with a state each and no token in it."""
    result = run(["status", "--json"], redis_client=fake_redis, publisher=publisher, clock=now)
    assert result.exit_code == STATUS_UNHEALTHY
    records = {record["app_id"]: record for record in json.loads(result.stdout)}
    assert records[APP]["state"] == "ok"
    assert records[APP]["version"] == 5
    assert records[APP]["seconds_left"] == 6600
    assert records[APP]["producer_id"] == "producer-a"
    assert records["wxgone"]["state"] == "missing"
    assert records["wxbroken"]["state"] == "invalid"
    assert records["wxbroken"]["error"].startswith("invalid update")
    assert "value" not in records[APP]
    assert OLD_TOKEN not in result.output


def test_status_of_an_empty_prefix_says_so(
    fake_redis: fakeredis.FakeRedis, publisher: FakePublisher, now: FakeClock
) -> None:
    """With nothing known, the table form says so and the JSON form is an empty list."""
    hold_lease(fake_redis)
    result = run(["status"], redis_client=fake_redis, publisher=publisher, clock=now)
    assert result.exit_code == 0
    assert "no apps known" in result.stderr
    result = run(["status", "--json"], redis_client=fake_redis, publisher=publisher, clock=now)
    assert json.loads(result.stdout) == []


@pytest.mark.usefixtures("mixed_snapshot")
def test_status_shows_which_apps_the_leader_serves(
    fake_redis: fakeredis.FakeRedis, publisher: FakePublisher, now: FakeClock
) -> None:
    """With the leader's announcement, each app says whether it is served, and one line on
    stderr names the leader; a garbage announcement is reported, not fatal."""
    from producer.leadership.announcement import announce

    announce(
        fake_redis,
        KEYS,
        producer_id="producer-a",
        owner="producer-a#1",
        epoch=3,
        app_ids=[APP, "wxgone"],
        now_s=now(),
    )
    hold_lease(fake_redis, "3|producer-a#1")
    result = run(["status", "--json"], redis_client=fake_redis, publisher=publisher, clock=now)
    served = {record["app_id"]: record["served"] for record in json.loads(result.stdout)}
    assert served == {APP: True, "wxgone": True, "wxbroken": False}
    result = run(["status"], redis_client=fake_redis, publisher=publisher, clock=now)
    assert "leader producer-a (epoch 3) serves 2 app(s)" in result.stderr
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines()[1:]}
    assert rows[APP][8] == "yes"
    fake_redis.set(KEYS.served, b"{garbage")
    result = run(["status", "--json"], redis_client=fake_redis, publisher=publisher, clock=now)
    assert result.exit_code == STATUS_UNHEALTHY  # wxgone is missing and may be served
    assert {record["served"] for record in json.loads(result.stdout)} == {None}


@pytest.mark.usefixtures("seeded")
def test_status_after_a_clean_stop_says_no_leader_and_exits_3(
    fake_redis: fakeredis.FakeRedis, publisher: FakePublisher, now: FakeClock
) -> None:
    """A leader that stopped cleanly released the lease but left its announcement: status
    says "no leader", serves nothing and exits 3; a new holder's stale announcement is not
    taken for its own."""
    from producer.leadership.announcement import announce

    announce(
        fake_redis,
        KEYS,
        producer_id="producer-a",
        owner="producer-a#1",
        epoch=3,
        app_ids=[APP],
        now_s=now() - 70,
    )
    result = run(["status"], redis_client=fake_redis, publisher=publisher, clock=now)
    assert result.exit_code == STATUS_UNHEALTHY, result.output
    assert "no leader" in result.stderr
    assert "producer-a" not in result.stderr
    [row] = result.stdout.splitlines()[1:]
    assert row.split()[8] == "no"
    hold_lease(fake_redis, "4|producer-b#2")
    result = run(["status"], redis_client=fake_redis, publisher=publisher, clock=now)
    assert result.exit_code == 0, result.output
    assert "leader producer-b#2 (epoch 4) has not announced" in result.stderr
    [row] = result.stdout.splitlines()[1:]
    assert row.split()[8] == "-"


def test_status_exits_3_when_a_served_credential_is_missing_or_expired(
    fake_redis: fakeredis.FakeRedis, store: TokenStore, publisher: FakePublisher, now: FakeClock
) -> None:
    """With a leader serving APP, an expired or missing APP token exits 3; an app the leader
    does not serve (left over from an old apps file) does not count."""
    from producer.leadership.announcement import announce

    hold_lease(fake_redis, "3|producer-a#1")
    announce(
        fake_redis,
        KEYS,
        producer_id="producer-a",
        owner="producer-a#1",
        epoch=3,
        app_ids=[APP],
        now_s=now(),
    )
    assert store.write(make_update(now.now_s)).written
    fake_redis.sadd(KEYS.known, "wxold:access_token")  # not served: missing is fine
    result = run(["status"], redis_client=fake_redis, publisher=publisher, clock=now)
    assert result.exit_code == 0, result.output
    now.advance(6601)  # APP's token is past its expiry (the key may still be there)
    result = run(["status", "--json"], redis_client=fake_redis, publisher=publisher, clock=now)
    assert result.exit_code == STATUS_UNHEALTHY
    assert {r["app_id"]: r["state"] for r in json.loads(result.stdout)}[APP] in (
        "expired",
        "missing",
    )


# --------------------------------------------------------------------------- settings, misc
@pytest.mark.parametrize("command", [["status"], ["get", APP], ["watch", "--count", "1"]])
def test_bad_redis_url_is_one_line_exit_2(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any, command: list[str]
) -> None:
    """A malformed WXTOKEN_REDIS_URL is one line naming the variable, exit 2, no traceback."""
    monkeypatch.chdir(tmp_path)  # no stray .env
    monkeypatch.setenv("WXTOKEN_REDIS_URL", "http://nowhere")
    result = CliRunner().invoke(main, command)
    assert result.exit_code == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("Error: WXTOKEN_REDIS_URL: scheme must be")
    assert "Traceback" not in result.output


def test_set_with_bad_settings_reads_no_further(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """Bad settings stop `set` with exit 2 before any service is contacted."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WXTOKEN_EXCHANGE", "no spaces allowed")
    result = CliRunner().invoke(main, ["set", APP, "--expires-in", "60"], input=NEW_TOKEN)
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: WXTOKEN_EXCHANGE")


@pytest.mark.parametrize("apps", ["", "wxapp", "wxapp:s,wxapp:t", "a:b,,c:d"])
def test_sandbox_refuses_a_bad_app_list(apps: str) -> None:
    """A malformed --apps is a usage error before anything listens."""
    result = CliRunner().invoke(main, ["sandbox", "--port", "0", "--apps", apps])
    assert result.exit_code == 2
    assert "--apps" in result.stderr


@pytest.mark.parametrize("wecom", ["ww", "ww:1", "ww:x:secret-x", "ww:1:s-1,ww:1:s-2"])
def test_sandbox_refuses_a_bad_wecom_list(wecom: str) -> None:
    """A malformed --wecom is a usage error naming the option, never echoing a secret."""
    result = CliRunner().invoke(main, ["sandbox", "--port", "0", "--wecom", wecom])
    assert result.exit_code == 2
    assert "--wecom" in result.stderr
    assert "secret-x" not in result.stderr
    assert "s-2" not in result.stderr


@pytest.mark.parametrize(
    "platforms",
    [
        "wxcomponent0000001:secret-x:pamtest",
        "wx1:secret-x:pamtest:" + "A" * 43,
        "wxcomponent0000001:secret-x:pamtest:" + "A" * 42,
        "wxcomponent0000001:secret-x:pamtest:" + "A" * 43 + "@",
    ],
)
def test_sandbox_refuses_a_bad_platform_list(platforms: str) -> None:
    """A malformed --platforms is a usage error naming the option, never echoing a secret."""
    result = CliRunner().invoke(main, ["sandbox", "--port", "0", "--platforms", platforms])
    assert result.exit_code == 2
    assert "--platforms" in result.stderr
    assert "secret-x" not in result.stderr


def test_watch_lines_mask_tokens_and_reject_garbage(now: FakeClock) -> None:
    """Each watched message is one line: masked update fields, or `rejected: <reason>`."""
    update = make_update(now.now_s, value=NEW_TOKEN, source=TokenSource.OVERRIDE)
    line = _format.message_line(update.encode(), now_s=now.now_s, as_json=False)
    assert f"{APP} access_token v5 override left=6600s" in line
    assert NEW_TOKEN not in line
    assert update.masked in line
    data = json.loads(_format.message_line(update.encode(), now_s=now.now_s, as_json=True))
    assert data["value"] == update.masked
    rejected = _format.message_line(
        b'{"value": "' + NEW_TOKEN.encode() + b'"}', now_s=0, as_json=False
    )
    assert "rejected: invalid update" in rejected
    assert NEW_TOKEN not in rejected


def test_set_warns_when_the_producers_would_refuse_its_key(
    fake_redis: fakeredis.FakeRedis,
    store: TokenStore,
    publisher: FakePublisher,
    now: FakeClock,
    seeded: TokenUpdate,
    tmp_path: Path,
) -> None:
    """The producers announce their verify key ids; `set` signed by another key warns (on
    stderr) that they will delete the override, and stays quiet when its key is listed."""
    private_path, _ = generate_keypair(tmp_path / "ops-tester.key")
    settings = SETTINGS.model_copy(
        update={"signing_key_file": private_path, "insecure_accept_unsigned": False}
    )

    def set_override() -> Result:
        context = OpsContext(
            settings=settings, redis_client=fake_redis, publisher=publisher, clock=now
        )
        return CliRunner().invoke(
            main, ["set", APP, "--expires-in", "3600"], input=NEW_TOKEN, obj=context
        )

    store.announce_verify_keys(["0123456789abcdef"])
    result = set_override()
    assert result.exit_code == 0, result.output
    assert "will delete this override" in result.stderr
    assert "0123456789abcdef" in result.stderr
    own = OpsContext(settings=settings).codec(must_sign=True).signer_key_id
    assert own is not None
    store.announce_verify_keys(["0123456789abcdef", own])
    quiet = set_override()
    assert quiet.exit_code == 0, quiet.output
    assert "warning" not in quiet.stderr


def test_watch_without_verify_keys_refuses_at_start() -> None:
    """`watch` without WXTOKEN_VERIFY_KEYS stops before connecting, like `status` and
    `get`: one line naming the variable, exit 2 (the broker here would be unreachable)."""
    settings = SETTINGS.model_copy(
        update={"insecure_accept_unsigned": False, "amqp_url": "amqp://guest:guest@127.0.0.1:1/"}
    )
    context = OpsContext(settings=settings, operator="ops:tester@host")
    result = CliRunner().invoke(main, ["watch", "--timeout", "1"], obj=context)
    assert result.exit_code == 2, result.output
    [line] = result.stderr.strip().splitlines()
    assert "WXTOKEN_VERIFY_KEYS" in line


def test_watch_marks_a_version_shown_before_as_re_published(now: FakeClock) -> None:
    """The leader's minute re-publish of the same version is marked, not shown as new; an
    older version is marked too; a new version is plain."""
    seen: _format.Seen = {}
    first = make_update(now.now_s)
    shown = _format.message_line(first.encode(), now_s=now(), as_json=False, seen=seen)
    assert "re-published" not in shown
    line = _format.message_line(first.encode(), now_s=now(), as_json=False, seen=seen)
    assert line.endswith("(re-published)")
    data = json.loads(_format.message_line(first.encode(), now_s=now(), as_json=True, seen=seen))
    assert data["republished"] is True
    newer = make_update(now.now_s, version=6, value=NEW_TOKEN)
    data = json.loads(_format.message_line(newer.encode(), now_s=now(), as_json=True, seen=seen))
    assert data["republished"] is False
    older = _format.message_line(first.encode(), now_s=now(), as_json=False, seen=seen)
    assert older.endswith("(older than v6)")


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["set"], "'APP_ID'"),
        (["bogus"], "'bogus'"),
        (["status", "--kind", "x"], "--kind"),
        (["gateway-key", "list"], "WXTOKEN_GATEWAY_KEYS_FILE"),
        (["sandbox", "--port", "99999"], "WXTOKEN_SANDBOX_PORT"),
    ],
)
def test_usage_errors_are_one_line(
    monkeypatch: pytest.MonkeyPatch, args: list[str], names: str
) -> None:
    """A usage error is one `Error:` line, exit 2, naming the parameter (and the variable an
    option reads) and the command's --help."""
    monkeypatch.delenv("WXTOKEN_GATEWAY_KEYS_FILE", raising=False)
    monkeypatch.delenv("WXTOKEN_SANDBOX_PORT", raising=False)
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("Error: ")
    assert names in line
    assert "--help'" in line
