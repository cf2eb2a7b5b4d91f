"""The batched follower: one pipelined read of every snapshot per tick, fed to refreshers
that do not read Redis themselves, for a standby and for the leader."""

from __future__ import annotations

from typing import Any

import fakeredis
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import SecretStr

from consumer_lib.errors import StoreError
from consumer_lib.wire.keys import KeyLayout
from consumer_lib.wire.signing import UpdateCodec
from consumer_lib.wire.update import TokenKind, TokenSource, TokenUpdate
from producer.apps import AppConfig, TokenApi
from producer.leadership.follower import SnapshotFollower
from producer.refresh.refresher import STANDBY_IDLE_S
from producer.store.remembering_codec import RememberingCodec
from producer.store.tokens import TokenStore
from producer.upstream.wechat import FetchedToken
from tests.conftest import FakeClock
from tests.unit._helpers import make_update, unreachable_redis
from tests.unit.producer.builders import build_refresher

APPS = [f"wxfollow{n:03d}" for n in range(30)]


class Gate:
    """Leading or not, as the test says."""

    fence_owner: str | None = None
    epoch: int | None = None

    def __init__(self, leading: bool) -> None:
        self.leading = leading

    def may_fetch(self, token_api: TokenApi) -> bool:
        return self.leading

    def may_fetch_now(
        self, token_api: TokenApi, *, need_s: float, force_refresh: bool = False
    ) -> bool:
        return self.leading

    def fenced(self) -> None:
        self.leading = False


class Upstream:
    def __init__(self) -> None:
        self.calls = 0

    def fetch(self, app: AppConfig, *, force_refresh: bool = False) -> FetchedToken:
        self.calls += 1
        return FetchedToken(value=f"TOKEN-{app.app_id}-{self.calls:05d}", expires_in_s=7200)


class CountingRedis(fakeredis.FakeRedis):
    """Counts single-key GETs: the follower must not send any."""

    gets = 0

    def get(self, name: Any) -> Any:
        CountingRedis.gets += 1
        return super().get(name)


class Fleet:
    def __init__(self, clock: FakeClock, *, leading: bool, codec: UpdateCodec) -> None:
        self.clock = clock
        self.server = fakeredis.FakeServer()
        self.redis = CountingRedis(server=self.server)
        self.codec = codec
        self.store = TokenStore(self.redis, KeyLayout(), codec)
        self.gate = Gate(leading)
        self.upstream = Upstream()
        self.published: list[TokenUpdate] = []
        self.refreshers = [
            build_refresher(
                AppConfig(app_id=app_id, secret=SecretStr("s3cret")),
                fetcher=self.upstream,
                store=self.store,
                publish=self.published.append,
                producer_id="me",
                gate=self.gate,
                clock=clock,
                follows_store=False,
            )
            for app_id in APPS
        ]
        self.follower = SnapshotFollower(self.redis, KeyLayout(), codec, chunk_keys=7)

    def someone_writes(self, app_id: str, value: str, **extra: Any) -> TokenUpdate:
        other = TokenStore(fakeredis.FakeRedis(server=self.server), KeyLayout(), self.codec)
        now = self.clock()
        update = make_update(
            app_id=app_id,
            value=value,
            version=other.next_version(app_id, TokenKind.ACCESS_TOKEN, now_s=now),
            issued_at=now,
            producer_id="other",
            **extra,
        )
        assert other.write(update).written
        return update

    def stored(self, app_id: str) -> TokenUpdate | None:
        return self.store.read(app_id)


def signed_codec() -> UpdateCodec:
    return UpdateCodec(signer=Ed25519PrivateKey.generate())


@pytest.fixture
def standby(clock: FakeClock) -> Fleet:
    return Fleet(clock, leading=False, codec=signed_codec())


@pytest.fixture
def leader(clock: FakeClock) -> Fleet:
    return Fleet(clock, leading=True, codec=RememberingCodec(signed_codec()))


def test_a_standby_follows_every_app_with_batched_reads_only(standby: Fleet) -> None:
    """Tokens another producer stores are adopted at the next tick, with no GET per app;
    a standby's steps do nothing and ask for a long wait."""
    written = {a: standby.someone_writes(a, f"TOKEN-{a}-theirs") for a in APPS}
    CountingRedis.gets = 0
    assert all(r.step() == STANDBY_IDLE_S for r in standby.refreshers)
    stats = standby.follower.tick(standby.refreshers)
    assert CountingRedis.gets == 0
    assert stats.read == len(APPS)
    assert {r.app.app_id: r.held for r in standby.refreshers} == written
    assert standby.upstream.calls == 0
    assert standby.published == []


def test_unchanged_snapshots_are_not_verified_again(standby: Fleet) -> None:
    """A quiet tick decodes nothing; only what changed is decoded and handed over."""
    for a in APPS:
        standby.someone_writes(a, f"TOKEN-{a}-first")
    assert standby.follower.tick(standby.refreshers).decoded == len(APPS)
    quiet = standby.follower.tick(standby.refreshers)
    assert (quiet.decoded, quiet.observed) == (0, 0)
    newer = standby.someone_writes(APPS[3], "TOKEN-second-0123456789")
    changed = standby.follower.tick(standby.refreshers)
    assert (changed.decoded, changed.observed) == (1, 1)
    assert standby.refreshers[3].held == newer


def test_a_forged_snapshot_is_not_adopted(standby: Fleet) -> None:
    """Bytes that do not verify are counted as invalid and never held."""
    standby.redis.set(KeyLayout().token(APPS[0]), b'{"payload": "x", "key_id": "0", "sig": ""}')
    stats = standby.follower.tick(standby.refreshers)
    assert stats.invalid == 1
    assert standby.refreshers[0].held is None


def test_the_leader_does_not_decode_what_it_wrote(leader: Fleet) -> None:
    """Bytes the leader wrote itself are recognised, not verified again."""
    for refresher in leader.refreshers:
        refresher.step()
    assert leader.upstream.calls == len(APPS)
    stats = leader.follower.tick(leader.refreshers)
    assert (stats.decoded, stats.observed) == (0, 0)


def test_the_leader_writes_back_a_lost_snapshot(leader: Fleet) -> None:
    """Redis flushed: the next tick writes every held token back, with no upstream call."""
    for refresher in leader.refreshers:
        refresher.step()
    leader.redis.flushall()
    leader.follower.tick(leader.refreshers)
    assert all(leader.stored(r.app.app_id) == r.held for r in leader.refreshers)
    assert leader.upstream.calls == len(APPS)


def test_the_leader_repairs_a_snapshot_older_than_its_token(leader: Fleet) -> None:
    """A snapshot older than the leader's token (a Redis failover to a stale replica) is
    replaced by the leader's newer token, not left behind (issue 8, item 9)."""
    refresher = leader.refreshers[0]
    refresher.step()
    held = refresher.held
    assert held is not None
    older = held.model_copy(update={"version": held.version - 5, "value": "TOKEN-stale-0123456"})
    leader.redis.set(KeyLayout().token(held.app_id), leader.codec.encode(older))
    leader.follower.tick(leader.refreshers)
    assert leader.stored(held.app_id) == held


def test_the_leader_adopts_an_override(leader: Fleet) -> None:
    """An operator's override, newer than what the leader holds, is adopted at the tick."""
    refresher = leader.refreshers[0]
    refresher.step()
    override = leader.someone_writes(
        APPS[0], "TOKEN-override-0123456789", source=TokenSource.OVERRIDE
    )
    leader.follower.tick(leader.refreshers)
    assert refresher.held == override


def test_the_leader_deletes_an_invalid_snapshot_and_writes_its_token(leader: Fleet) -> None:
    """Garbage under a token key is deleted and the held token written in its place."""
    refresher = leader.refreshers[0]
    refresher.step()
    leader.redis.set(KeyLayout().token(APPS[0]), b"{garbage")
    leader.follower.tick(leader.refreshers)
    leader.follower.tick(leader.refreshers)
    assert leader.stored(APPS[0]) == refresher.held


def test_redis_away_is_a_store_error(clock: FakeClock) -> None:
    """An unreachable Redis makes the tick raise our StoreError, nothing else."""
    fleet = Fleet(clock, leading=False, codec=signed_codec())
    follower = SnapshotFollower(unreachable_redis(), KeyLayout(), fleet.codec)
    with pytest.raises(StoreError):
        follower.tick(fleet.refreshers)


def test_the_leader_reads_its_own_snapshot_only_before_a_fetch(leader: Fleet) -> None:
    """Re-publishing steps send no GET; a step about to fetch reads first, so a token
    another producer stored meanwhile is adopted instead of fetched."""
    refresher = leader.refreshers[0]
    refresher.step()
    CountingRedis.gets = 0
    leader.clock.advance(60)
    refresher.step()
    assert CountingRedis.gets == 0
    theirs = leader.someone_writes(APPS[0], "TOKEN-theirs-0123456789")
    leader.clock.advance(6900 - 60)  # inside the refresh margin of our token
    refresher.step()
    assert refresher.held == theirs
    assert leader.upstream.calls == 1


def test_a_reported_override_is_known_as_current_before_it_is_judged(leader: Fleet) -> None:
    """An override stored between two batched reads and then reported rejected is read
    first, so the report is about the current token: one forced refresh, not a re-publish
    of the leader's older token."""
    from consumer_lib.wire.refresh_request import RefreshRequest

    refresher = leader.refreshers[0]
    refresher.step()
    override = leader.someone_writes(
        APPS[0], "TOKEN-override-0123456789", source=TokenSource.OVERRIDE
    )
    refresher.request_refresh(
        RefreshRequest.for_token(APPS[0], override.value, requester="ops", now_s=leader.clock())
    )
    refresher.step()
    assert refresher.stats.forced_refreshes == 1
    assert leader.upstream.calls == len(APPS[:1]) + 1
    assert refresher.held is not None
    assert refresher.held.version > override.version


def test_a_token_fetched_during_the_read_is_not_written_back(
    leader: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fill: the batched read finds nothing, while the steps fetch and write every token
    meanwhile. What was read predates those writes: nothing is "lost by Redis", so nothing
    is written back (no second write, no warning per credential)."""
    read = leader.follower._read

    def read_while_the_steps_fetch(names: list[str]) -> list[bytes | None]:
        raws = read(names)
        for refresher in leader.refreshers:
            refresher.step()
        return raws

    monkeypatch.setattr(leader.follower, "_read", read_while_the_steps_fetch)
    writes: list[TokenUpdate] = []
    write = leader.store.write
    monkeypatch.setattr(leader.store, "write", lambda u, **kw: writes.append(u) or write(u, **kw))
    stats = leader.follower.tick(leader.refreshers)
    assert leader.upstream.calls == len(APPS)
    assert len(writes) == len(APPS)  # each fetch's own write, none written back
    assert stats.observed == 0
    for refresher in leader.refreshers:
        assert leader.stored(refresher.app.app_id) == refresher.held
