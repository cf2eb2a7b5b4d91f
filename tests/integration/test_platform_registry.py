"""The platform registry on real PostgreSQL and real MariaDB (each test runs on both, in a
database the session created): migrations, the callback log, the verify ticket, authorizers'
refresh tokens under compare-and-set, secrets sealed at rest, key rotation, and a database
that goes away and comes back."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from consumer_lib.errors import ConfigError
from producer.platform.db.database import STATEMENT_TIMEOUT_S, create_engine, deadline
from producer.platform.db.migrations import VERSION_TABLE, check, head, migrate
from producer.platform.db.registry import PlatformRegistry
from producer.platform.db.rotation import rotate_keys
from producer.platform.db.schema import authorizers, callbacks, metadata, tickets, token_place
from producer.platform.db.sealing import Sealer, new_key_line
from producer.platform.db.sealing import key_id as sealing_key_id
from producer.platform.db.startup import open_registry
from producer.platform.errors import RegistryUnavailable, SealBroken
from producer.platform.events import PlatformEvent
from tests.conftest import FakeClock
from tests.integration.platform_db import ADMIN_URLS, KINDS, private_database
from tests.integration.servers import free_port
from tests.integration.tcp_proxy import proxy_to
from tests.waiting import wait_for


@pytest.fixture(scope="session", params=KINDS)
def migrated_url(request: pytest.FixtureRequest) -> Iterator[sa.URL]:
    """A database on each server, migrated once for the session's registry tests."""
    with private_database(request.param) as url:
        migrate(url)
        yield url


@pytest.fixture
def engine(migrated_url: sa.URL) -> Iterator[sa.Engine]:
    engine = create_engine(migrated_url)
    yield engine
    engine.dispose()


@pytest.fixture
def key() -> bytes:
    return os.urandom(32)


@pytest.fixture
def registry(engine: sa.Engine, key: bytes, clock: FakeClock) -> PlatformRegistry:
    return PlatformRegistry(engine, Sealer([key]), clock)


@pytest.fixture
def platform() -> str:
    """A component appid no other test uses: tests share the session's database."""
    return f"wxc{uuid.uuid4().hex[:15]}"


def _event(platform: str, *, encrypt: str, create_time_s: int = 1_800_000_000, **fields: object):
    info_type = str(fields.pop("info_type", "authorized"))
    return PlatformEvent(
        component_appid=platform,
        info_type=info_type,  # type: ignore[arg-type]
        raw_info_type=info_type,
        create_time_s=create_time_s,
        received_at_s=1_800_000_001.0,
        push_id=hashlib.sha1(encrypt.encode(), usedforsecurity=False).hexdigest(),
        **fields,  # type: ignore[arg-type]
    )


# ------------------------------------------------------------------ migrations
@pytest.mark.parametrize("kind", KINDS)
def test_migrations_build_the_schema_from_empty_and_a_rerun_changes_nothing(kind: str) -> None:
    """An empty database has no revision; migrate() brings it to head with exactly the
    tables of schema.py; migrating again is a no-op."""
    with private_database(kind) as url:
        assert check(url) is None
        assert migrate(url) == head()
        assert check(url) == head()
        assert migrate(url) == head()
        engine = sa.create_engine(url, poolclass=sa.NullPool)
        inspector = sa.inspect(engine)
        assert set(inspector.get_table_names()) == {*metadata.tables, VERSION_TABLE}
        for table in metadata.tables.values():
            columns = {c["name"] for c in inspector.get_columns(table.name)}
            assert columns == {c.name for c in table.columns}, table.name
        uniques = inspector.get_unique_constraints("platform_callbacks")
        assert {tuple(u["column_names"]) for u in uniques} == {("component_appid", "push_id")}
        # Alembic's own comparison: the revisions build exactly what schema.py describes.
        with engine.connect() as connection:
            options = {"compare_type": True, "version_table": VERSION_TABLE}
            context = MigrationContext.configure(connection, opts=options)
            assert compare_metadata(context, metadata) == []
        engine.dispose()


@pytest.mark.parametrize("kind", KINDS)
def test_producers_starting_together_migrate_once(kind: str) -> None:
    """Three migrate() at once on an empty database (producers starting together) take
    turns on the database lock: each ends at head, none fails on a half-built schema."""
    with private_database(kind) as url:
        results: list[str] = []
        errors: list[BaseException] = []

        def run() -> None:
            try:
                results.append(migrate(url))
            except Exception as exc:  # noqa: BLE001 - collected, asserted below
                errors.append(exc)

        threads = [threading.Thread(target=run) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert errors == []
        assert results == [head()] * 3
        assert check(url) == head()


@pytest.mark.parametrize("kind", KINDS)
def test_check_and_migrate_refuse_a_database_at_an_unknown_revision(kind: str) -> None:
    """A database a newer release migrated (a revision we do not ship) is refused with a
    ConfigError naming the revision, by check() and by migrate(), and left as it is."""
    with private_database(kind) as url:
        migrate(url)
        engine = sa.create_engine(url, poolclass=sa.NullPool)
        with engine.begin() as connection:
            bump = f"UPDATE {VERSION_TABLE} SET version_num = '9999'"  # noqa: S608 - ours
            connection.execute(sa.text(bump))
        with pytest.raises(ConfigError, match="9999"):
            check(url)
        with pytest.raises(ConfigError, match="does not know"):
            migrate(url)
        with engine.connect() as connection:
            read = f"SELECT version_num FROM {VERSION_TABLE}"  # noqa: S608 - a constant
            version = connection.execute(sa.text(read))
            assert version.scalar_one() == "9999"
        engine.dispose()


@pytest.mark.parametrize("kind", KINDS)
def test_the_producer_start_migrates_and_opens_the_registry(kind: str, tmp_path: Path) -> None:
    """open_registry (what wxtoken-producer runs with WXTOKEN_PLATFORM_DB_URL set) brings an
    empty database to head and returns a working registry sealing with the file's key."""
    key_file = tmp_path / "platform.keys"
    key_file.write_text(new_key_line() + "\n")
    with private_database(kind) as url:
        registry = open_registry(url.render_as_string(hide_password=False), key_file)
        try:
            assert check(url) == head()
            assert registry.authorize("wxc1", "wxa1", "refresh-1") == 1
            assert registry.refresh_token("wxc1", "wxa1") == ("refresh-1", 1)
        finally:
            registry.close()


def test_check_shows_no_password_when_the_database_is_unreachable() -> None:
    """A closed port: RegistryUnavailable at once, and the URL's password is not in it."""
    url = f"postgresql+psycopg://u:sekrit-pw@127.0.0.1:{free_port()}/db"
    with pytest.raises(RegistryUnavailable) as caught:
        check(url)
    assert "sekrit-pw" not in str(caught.value)


@pytest.mark.parametrize("kind", KINDS)
def test_a_migration_waits_for_the_lock_longer_than_a_statement_may(kind: str) -> None:
    """Another producer holds the migration lock beyond the registry's statement timeout:
    migrate() keeps waiting (its own, longer timeouts) and finishes once the lock is free."""
    with private_database(kind) as url:
        admin = sa.create_engine(url, poolclass=sa.NullPool)
        if kind == "postgresql":
            take = "SELECT pg_advisory_lock(hashtext('wxtoken_platform_migrate'))"
            give = "SELECT pg_advisory_unlock(hashtext('wxtoken_platform_migrate'))"
            waiting = (
                "SELECT count(*) FROM pg_stat_activity WHERE datname = :db AND wait_event = "
                "'advisory' AND clock_timestamp() - query_start > make_interval(secs => :s)"
            )
        else:
            name = f"wxtoken_platform_migrate.{url.database}"
            take, give = f"SELECT GET_LOCK('{name}', 0)", f"SELECT RELEASE_LOCK('{name}')"
            waiting = (
                "SELECT count(*) FROM information_schema.processlist WHERE db = :db AND "
                "state = 'User lock' AND time > :s"
            )
        results: list[str] = []

        def migrate_waiting() -> int:
            # A new transaction each time: PostgreSQL's activity view is one snapshot per one.
            with admin.connect() as observer:
                query = sa.text(waiting)
                found = observer.execute(query, {"db": url.database, "s": STATEMENT_TIMEOUT_S + 1})
                return int(found.scalar_one())

        with admin.connect() as holder:
            holder.execute(sa.text(take))
            holder.commit()
            thread = threading.Thread(target=lambda: results.append(migrate(url)))
            thread.start()
            wait_for(
                migrate_waiting,
                timeout_s=60,
                interval_s=0.5,
                message="migrate() waiting on the lock past a statement's timeout",
            )
            holder.execute(sa.text(give))
            holder.commit()
            thread.join(60)
        assert results == [head()]
        admin.dispose()


# ------------------------------------------------------------------ callbacks
def test_a_push_is_stored_once_and_waits_for_the_leader(
    registry: PlatformRegistry, platform: str, engine: sa.Engine
) -> None:
    """The same push twice: True then False, one row, still encrypted; it is unprocessed
    until marked, and marked once."""
    event = _event(platform, encrypt="ENCRYPTED-A", authorizer_appid="wxa1")
    assert registry.record_callback(event, "ENCRYPTED-A") is True
    assert registry.record_callback(event, "ENCRYPTED-A") is False
    other_platform = _event(platform + "x", encrypt="ENCRYPTED-A")
    assert registry.record_callback(other_platform, "ENCRYPTED-A") is True
    with engine.connect() as connection:
        rows = connection.execute(
            sa.select(callbacks).where(callbacks.c.component_appid == platform)
        ).all()
    assert len(rows) == 1
    assert rows[0].encrypt_b64 == "ENCRYPTED-A"
    assert rows[0].authorizer_appid == "wxa1"
    pending = [c for c in registry.unprocessed_callbacks(1000) if c.component_appid == platform]
    assert [c.push_id for c in pending] == [event.push_id]
    assert registry.mark_processed(pending[0].id, "authorized wxa1") is True
    assert registry.mark_processed(pending[0].id, "again") is False
    assert all(c.id != pending[0].id for c in registry.unprocessed_callbacks(1000))


def test_only_processed_callbacks_are_pruned(
    registry: PlatformRegistry, platform: str, engine: sa.Engine, clock: FakeClock
) -> None:
    """Pruning deletes callbacks processed before the cutoff, never an unprocessed one nor
    one processed after it."""
    for n in range(4):
        registry.record_callback(_event(platform, encrypt=f"P{n}"), f"P{n}")
    ids = [c.id for c in registry.unprocessed_callbacks(1000) if c.component_appid == platform]
    registry.mark_processed(ids[0], "done")
    registry.mark_processed(ids[1], "done")
    cutoff = clock() + 1
    clock.advance(10)
    registry.mark_processed(ids[2], "done later")
    while registry.prune_callbacks(cutoff, limit=1):
        pass
    with engine.connect() as connection:
        left = connection.execute(
            sa.select(callbacks.c.id).where(callbacks.c.component_appid == platform)
        ).scalars()
        assert sorted(left) == ids[2:]


# ------------------------------------------------------------------ the verify ticket
def test_a_ticket_is_never_replaced_by_an_older_one(
    registry: PlatformRegistry, platform: str, clock: FakeClock
) -> None:
    """Newer CreateTime wins; an older or equal one is refused; platforms never share one;
    a ticket push recorded as a callback stores its ticket in the same transaction."""
    assert registry.verify_ticket(platform) is None
    assert registry.save_verify_ticket(platform, "ticket-100", 100) is True
    assert registry.save_verify_ticket(platform, "ticket-50", 50) is False
    assert registry.save_verify_ticket(platform, "ticket-100b", 100) is False
    clock.advance(30)
    held = registry.verify_ticket(platform)
    assert held is not None
    assert (held.ticket, held.create_time_s, held.age_s) == ("ticket-100", 100, 30)
    assert registry.save_verify_ticket(platform + "x", "other-platform", 10) is True
    pushed = _event(
        platform,
        encrypt="TICKET-PUSH",
        info_type="component_verify_ticket",
        create_time_s=200,
        verify_ticket="ticket-200",
    )
    assert registry.record_callback(pushed, "TICKET-PUSH") is True
    held = registry.verify_ticket(platform)
    assert held is not None
    assert (held.ticket, held.create_time_s) == ("ticket-200", 200)
    other = registry.verify_ticket(platform + "x")
    assert other is not None
    assert other.ticket == "other-platform"


# ------------------------------------------------------------------ authorizers
def test_authorizer_states_and_two_platforms_sharing_an_account(
    registry: PlatformRegistry, platform: str
) -> None:
    """authorize → needs re-authorization (once, and only for the token that failed) →
    re-authorized → unauthorized (token erased); another platform's row is untouched."""
    other = platform + "x"
    assert registry.authorize(platform, "wxa1", "refresh-1") == 1
    assert registry.authorize(other, "wxa1", "other-refresh") == 1
    assert registry.refresh_token(platform, "wxa1") == ("refresh-1", 1)
    assert registry.mark_needs_reauthorization(platform, "wxa1", "61023", version=0) is False
    assert registry.mark_needs_reauthorization(platform, "wxa1", "61023 invalid") is True
    assert registry.mark_needs_reauthorization(platform, "wxa1", "61023 again") is False
    assert registry.refresh_token(platform, "wxa1") is None
    held = registry.authorizer(platform, "wxa1")
    assert held is not None
    assert (held.state, held.reason, held.has_refresh_token) == (
        "needs_reauthorization",
        "61023 invalid",
        True,
    )
    assert registry.mark_pending_code(platform, "wxa1") == 1
    assert registry.authorize(platform, "wxa1", "refresh-2") == 2
    assert registry.refresh_token(platform, "wxa1") == ("refresh-2", 2)
    assert registry.unauthorize(platform, "wxa1") is True
    assert registry.unauthorize(platform, "wxa1") is False
    assert registry.refresh_token(platform, "wxa1") is None
    gone = registry.authorizer(platform, "wxa1")
    assert gone is not None
    assert (gone.state, gone.has_refresh_token) == ("unauthorized", False)
    assert registry.refresh_token(other, "wxa1") == ("other-refresh", 1)
    assert registry.counts(platform)["unauthorized"] == 1
    assert registry.counts(other) == {
        "authorized": 1,
        "needs_reauthorization": 0,
        "unauthorized": 0,
        "pending_code": 0,
    }
    with pytest.raises(ValueError, match="empty"):
        registry.authorize(platform, "wxa2", "")
    account = f"wxa{uuid.uuid4().hex[:12]}"
    assert registry.platforms_of(account) == []
    registry.authorize(platform, account, "r")
    registry.authorize(other, account, "r")
    assert registry.platforms_of(account) == sorted([platform, other])
    registry.unauthorize(other, account)
    assert registry.platforms_of(account) == [platform]


def test_two_concurrent_writers_of_a_refresh_token_one_wins(
    engine: sa.Engine, key: bytes, clock: FakeClock, platform: str
) -> None:
    """Two threads (each with its own registry and connections) read version v and
    compare-and-set their own new token: exactly one succeeds each round, and the token held
    is the winner's."""
    first = PlatformRegistry(engine, Sealer([key]), clock)
    second = PlatformRegistry(engine, Sealer([key]), clock)
    first.authorize(platform, "wxa1", "refresh-0")
    for round_number in range(20):
        barrier = threading.Barrier(2)
        results: dict[str, bool] = {}
        threads = [
            threading.Thread(
                target=_write_after_reading,
                args=(registry, platform, f"{name}-{round_number}", barrier, results),
            )
            for name, registry in (("first", first), ("second", second))
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert sorted(results.values()) == [False, True], results
        (winner,) = (token for token, won in results.items() if won)
        assert first.refresh_token(platform, "wxa1") == (winner, round_number + 2)


def _write_after_reading(
    registry: PlatformRegistry,
    platform: str,
    new_token: str,
    barrier: threading.Barrier,
    results: dict[str, bool],
) -> None:
    """Read the token's version, wait for the other writer to have read it too, then
    compare-and-set `new_token`."""
    held = registry.refresh_token(platform, "wxa1")
    assert held is not None
    barrier.wait(10)
    results[new_token] = registry.replace_refresh_token(platform, "wxa1", held[1], new_token)


def test_ten_thousand_authorizers_page_by_page(
    registry: PlatformRegistry, engine: sa.Engine, key: bytes, platform: str
) -> None:
    """10,000 authorizers come back exactly once through keyset pages, by state too."""
    sealer = Sealer([key])
    rows = []
    for n in range(10_000):
        appid = f"wxa{n:05d}"
        state = "needs_reauthorization" if n % 10 == 0 else "authorized"
        sealed = sealer.seal(f"refresh-{n}", token_place(platform, appid))
        rows.append(
            {
                "component_appid": platform,
                "authorizer_appid": appid,
                "state": state,
                "refresh_token_sealed": sealed.blob,
                "refresh_token_key_id": sealed.key_id,
                "refresh_token_version": 1,
                "updated_at_s": 0.0,
            }
        )
    with engine.begin() as connection:
        connection.execute(authorizers.insert(), rows)
    seen: list[str] = []
    after = None
    while page := registry.authorizers(platform, after=after, limit=500):
        seen.extend(a.authorizer_appid for a in page)
        after = page[-1].authorizer_appid
    assert seen == [row["authorizer_appid"] for row in rows]
    needing = []
    after = None
    while page := registry.authorizers(platform, "needs_reauthorization", after=after):
        needing.extend(a.authorizer_appid for a in page)
        after = page[-1].authorizer_appid
    assert len(needing) == 1000
    assert registry.counts(platform)["authorized"] == 9000
    assert registry.refresh_token(platform, "wxa09999") == ("refresh-9999", 1)


# ------------------------------------------------------------------ secrets at rest
def test_secrets_are_sealed_at_rest_and_bound_to_their_row(
    registry: PlatformRegistry, engine: sa.Engine, platform: str
) -> None:
    """No column holds the plain ticket or refresh token; a ciphertext copied to another
    row (or platform) does not open there."""
    registry.authorize(platform, "wxa1", "REFRESH-SECRET-1")
    registry.authorize(platform, "wxa2", "REFRESH-SECRET-2")
    registry.save_verify_ticket(platform, "TICKET-SECRET", 100)
    registry.save_verify_ticket(platform + "x", "TICKET-OTHER", 100)
    with engine.connect() as connection:
        raw = [
            *connection.execute(
                sa.select(authorizers).where(authorizers.c.component_appid == platform)
            ),
            *connection.execute(sa.select(tickets).where(tickets.c.component_appid == platform)),
        ]
    dumped = repr(raw).encode() + b"".join(
        bytes(value) for row in raw for value in row if isinstance(value, bytes | memoryview)
    )
    for secret in (b"REFRESH-SECRET", b"TICKET-SECRET"):
        assert secret not in dumped
    with engine.begin() as connection:
        stolen = connection.execute(
            sa.select(authorizers.c.refresh_token_sealed).where(
                authorizers.c.component_appid == platform,
                authorizers.c.authorizer_appid == "wxa1",
            )
        ).scalar_one()
        connection.execute(
            authorizers.update()
            .where(
                authorizers.c.component_appid == platform,
                authorizers.c.authorizer_appid == "wxa2",
            )
            .values(refresh_token_sealed=stolen)
        )
        ticket = connection.execute(
            sa.select(tickets.c.ticket_sealed).where(tickets.c.component_appid == platform)
        ).scalar_one()
        connection.execute(
            tickets.update()
            .where(tickets.c.component_appid == platform + "x")
            .values(ticket_sealed=ticket)
        )
    assert registry.refresh_token(platform, "wxa1") == ("REFRESH-SECRET-1", 1)
    with pytest.raises(SealBroken, match="another row"):
        registry.refresh_token(platform, "wxa2")
    with pytest.raises(SealBroken):
        registry.verify_ticket(platform + "x")


@pytest.mark.parametrize("kind", KINDS)
def test_rotation_reseals_everything_under_the_new_first_key(kind: str, clock: FakeClock) -> None:
    """Old key only → a new key put first → rotate: every value is under the new key, which
    alone opens them all, the old key alone opens none; a value under a key the file lacks is
    reported and left as it is."""
    old, new, lost = os.urandom(32), os.urandom(32), os.urandom(32)
    with private_database(kind) as url:
        migrate(url)
        engine = create_engine(url)
        before = PlatformRegistry(engine, Sealer([old]), clock)
        before.save_verify_ticket("wxc1", "ticket-1", 100)
        for n in range(5):
            before.authorize("wxc1", f"wxa{n}", f"refresh-{n}")
        before.unauthorize("wxc1", "wxa4")  # no token left to rotate
        PlatformRegistry(engine, Sealer([lost]), clock).authorize("wxc2", "wxa0", "orphan")

        report = rotate_keys(engine, Sealer([new, old]), batch=2)
        assert report.resealed == 5
        assert len(report.unopened) == 1
        assert "platform_authorizers: wxc2/wxa0" in report.unopened[0]
        assert rotate_keys(engine, Sealer([new, old])).resealed == 0

        with engine.connect() as connection:
            ids = set(connection.execute(sa.select(tickets.c.ticket_key_id)).scalars())
            ids |= set(
                connection.execute(
                    sa.select(authorizers.c.refresh_token_key_id).where(
                        authorizers.c.component_appid == "wxc1",
                        authorizers.c.refresh_token_key_id.is_not(None),
                    )
                ).scalars()
            )
        assert ids == {sealing_key_id(new)}
        after = PlatformRegistry(engine, Sealer([new]), clock)
        for n in range(4):
            assert after.refresh_token("wxc1", f"wxa{n}") == (f"refresh-{n}", 1)
        held = after.verify_ticket("wxc1")
        assert held is not None
        assert held.ticket == "ticket-1"
        with pytest.raises(SealBroken, match="does not hold"):
            before.refresh_token("wxc1", "wxa0")
        engine.dispose()


@pytest.mark.parametrize("kind", KINDS)
def test_rotation_from_a_shell(kind: str, tmp_path: Path, clock: FakeClock) -> None:
    """`python -m producer.platform.db.rotation` with the producer's two variables re-seals
    under the file's first key (exit 0), then finds nothing to do."""
    old, new = new_key_line(), new_key_line()
    key_file = tmp_path / "platform.keys"
    key_file.write_text(f"{old}\n")
    with private_database(kind) as url:
        migrate(url)
        engine = create_engine(url)
        PlatformRegistry(engine, Sealer.from_file(key_file), clock).authorize("c", "a", "r-1")
        key_file.write_text(f"# new first\n{new}\n{old}\n")
        env = {
            **os.environ,
            "WXTOKEN_PLATFORM_DB_URL": url.render_as_string(hide_password=False),
            "WXTOKEN_PLATFORM_KEY_FILE": str(key_file),
        }
        command = [sys.executable, "-m", "producer.platform.db.rotation"]
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("re-sealed 1 value(s) under key "), done.stdout
        again = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        assert again.stdout.startswith("re-sealed 0 value(s)"), again.stdout
        key_file.write_text(f"{new}\n")
        fresh = PlatformRegistry(engine, Sealer.from_file(key_file), clock)
        assert fresh.refresh_token("c", "a") == ("r-1", 1)
        engine.dispose()


# ------------------------------------------------------------------ the database away
@pytest.mark.parametrize("kind", KINDS)
def test_a_closed_port_is_registry_unavailable_for_every_operation(
    kind: str, key: bytes, clock: FakeClock, platform: str
) -> None:
    """Nothing listens: each operation raises RegistryUnavailable (not a driver error)."""
    engine = create_engine(sa.make_url(ADMIN_URLS[kind]).set(port=free_port()))
    registry = PlatformRegistry(engine, Sealer([key]), clock)
    event = _event(platform, encrypt="E")
    for call in (
        lambda: registry.record_callback(event, "E"),
        lambda: registry.save_verify_ticket(platform, "t", 1),
        lambda: registry.verify_ticket(platform),
        lambda: registry.authorize(platform, "wxa1", "r"),
        lambda: registry.replace_refresh_token(platform, "wxa1", 1, "r2"),
        lambda: registry.mark_needs_reauthorization(platform, "wxa1", "61023"),
        lambda: registry.authorizers(platform),
        lambda: registry.counts(platform),
        lambda: registry.unprocessed_callbacks(),
        lambda: registry.mark_processed(1, "done"),
    ):
        with pytest.raises(RegistryUnavailable):
            call()
    engine.dispose()


def test_a_cut_connection_fails_fast_and_the_good_data_is_intact_after(
    migrated_url: sa.URL, key: bytes, clock: FakeClock, platform: str
) -> None:
    """Through a proxy that is cut: writes and reads raise RegistryUnavailable, nothing is
    half-written; once restored, what was stored before is all there and writes work."""
    with proxy_to(migrated_url.host or "127.0.0.1", migrated_url.port or 0) as proxy:
        engine = create_engine(migrated_url.set(host="127.0.0.1", port=proxy.port))
        registry = PlatformRegistry(engine, Sealer([key]), clock)
        registry.authorize(platform, "wxa1", "refresh-1")
        registry.save_verify_ticket(platform, "ticket-1", 100)
        assert registry.record_callback(_event(platform, encrypt="E1"), "E1") is True
        proxy.cut()
        with pytest.raises(RegistryUnavailable):
            registry.record_callback(_event(platform, encrypt="E2"), "E2")
        with pytest.raises(RegistryUnavailable):
            registry.replace_refresh_token(platform, "wxa1", 1, "refresh-lost")
        with pytest.raises(RegistryUnavailable):
            registry.save_verify_ticket(platform, "ticket-lost", 200)
        proxy.restore()
        assert registry.refresh_token(platform, "wxa1") == ("refresh-1", 1)
        held = registry.verify_ticket(platform)
        assert held is not None
        assert held.ticket == "ticket-1"
        # WeChat retries the push that was not answered `success`: now it is stored.
        assert registry.record_callback(_event(platform, encrypt="E2"), "E2") is True
        assert registry.record_callback(_event(platform, encrypt="E1"), "E1") is False
        assert registry.replace_refresh_token(platform, "wxa1", 1, "refresh-2") is True
        engine.dispose()


def test_a_stalled_link_fails_instead_of_hanging(
    migrated_url: sa.URL, key: bytes, clock: FakeClock, platform: str
) -> None:
    """A link that stops forwarding (bytes accepted, no answer: a stopped server, a silent
    network) makes each operation RegistryUnavailable within its deadline, never a hung
    thread (libpq has no read timeout of its own); restored, it works with the data intact."""
    with proxy_to(migrated_url.host or "127.0.0.1", migrated_url.port or 0) as proxy:
        engine = create_engine(
            migrated_url.set(host="127.0.0.1", port=proxy.port), statement_timeout_s=1
        )
        registry = PlatformRegistry(engine, Sealer([key]), clock)
        registry.authorize(platform, "wxa1", "refresh-1")
        with engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))
            proxy.pause()  # mid-transaction, on a connection already checked out
            with pytest.raises(sa.exc.DBAPIError), deadline(connection, 1):
                connection.execute(sa.text("SELECT 2"))
        with pytest.raises(RegistryUnavailable):
            registry.record_callback(_event(platform, encrypt="S1"), "S1")
        with pytest.raises(RegistryUnavailable):
            registry.refresh_token(platform, "wxa1")
        proxy.restore()
        assert registry.refresh_token(platform, "wxa1") == ("refresh-1", 1)
        assert registry.record_callback(_event(platform, encrypt="S1"), "S1") is True
        engine.dispose()
