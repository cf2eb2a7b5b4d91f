"""`Leadership` (the leader lease) and how the refresher obeys it, on fakeredis."""

from __future__ import annotations

import logging

import fakeredis
import pytest

from consumer_lib.wire.keys import KeyLayout
from producer.apps import TokenApi
from producer.leadership.lease import Leadership
from producer.refresh.refresher import AppRefresher, RefreshTiming
from producer.store.tokens import TokenStore
from tests.conftest import FakeClock
from tests.unit._helpers import make_update
from tests.unit.producer.builders import build_refresher, discard
from tests.unit.producer.refresh.test_refresher import APP, FakeFetcher

KEYS = KeyLayout("lease-test")


def leadership(
    client: fakeredis.FakeRedis, owner: str, clock: FakeClock, ttl_s: float = 10.0
) -> Leadership:
    return Leadership(
        client,
        lease_key=KEYS.leader,
        epoch_key=KEYS.leader_epoch,
        owner=owner,
        ttl_s=ttl_s,
        monotonic=clock,
        rand=lambda: 0.5,
    )


@pytest.fixture
def server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


def client_of(server: fakeredis.FakeServer) -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis(server=server)


def gated_refresher(
    server: fakeredis.FakeServer,
    clock: FakeClock,
    gate: Leadership,
    fetcher: FakeFetcher,
    published: list[object] | None = None,
) -> AppRefresher:
    """A refresher of `APP` behind `gate`, issuing as its owner, on `server`'s Redis."""
    return build_refresher(
        APP,
        fetcher=fetcher,
        store=TokenStore(client_of(server), KEYS),
        publish=discard if published is None else published.append,
        producer_id=gate.owner,
        gate=gate,
        clock=clock,
    )


def test_first_producer_leads_and_others_stand_by(
    server: fakeredis.FakeServer, clock: FakeClock
) -> None:
    """The first to tick takes the lease; a second producer is refused and names the holder."""
    first = leadership(client_of(server), "a", clock)
    second = leadership(client_of(server), "b", clock)
    first.tick()
    second.tick()
    assert first.is_leader
    assert first.epoch == 1
    assert not second.is_leader
    assert second.holder == "a"


def test_leader_renews_within_its_ttl(server: fakeredis.FakeServer, clock: FakeClock) -> None:
    """The leader ticks again after a third of the TTL and keeps the same epoch."""
    first = leadership(client_of(server), "a", clock)
    assert first.tick() == pytest.approx(10.0 / 3)
    clock.advance(10.0 / 3)
    first.tick()
    assert first.is_leader
    assert first.epoch == 1
    assert client_of(server).pttl(KEYS.leader) > 9000


def test_standby_takes_over_when_the_lease_expires(
    server: fakeredis.FakeServer, clock: FakeClock
) -> None:
    """Once the dead leader's lease is gone, a standby takes it with a new epoch."""
    first = leadership(client_of(server), "a", clock)
    second = leadership(client_of(server), "b", clock)
    first.tick()
    assert second.tick() <= 1.0  # standbys look about once a second
    client_of(server).delete(KEYS.leader)  # what PX expiry does after a SIGKILL
    second.tick()
    assert second.is_leader
    assert second.epoch == 2


def test_release_hands_over_at_once(server: fakeredis.FakeServer, clock: FakeClock) -> None:
    """A clean stop deletes the lease, so the next standby tick takes it."""
    first = leadership(client_of(server), "a", clock)
    second = leadership(client_of(server), "b", clock)
    first.tick()
    first.release()
    assert not first.is_leader
    second.tick()
    assert second.is_leader


def test_a_clean_release_is_logged_at_info(
    server: fakeredis.FakeServer, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Stepping down to shut down is expected: INFO, not the WARNING of a lost lease."""
    first = leadership(client_of(server), "a", clock)
    first.tick()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="producer.leadership.lease"):
        first.release()
    [line] = [r for r in caplog.records if "no longer the leader" in r.getMessage()]
    assert line.levelno == logging.INFO
    assert "shutting down" in line.getMessage()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_release_never_deletes_someone_elses_lease(
    server: fakeredis.FakeServer, clock: FakeClock
) -> None:
    """A producer that lost the lease and then stops leaves the new leader's lease alone."""
    first = leadership(client_of(server), "a", clock)
    second = leadership(client_of(server), "b", clock)
    first.tick()
    client_of(server).delete(KEYS.leader)
    second.tick()
    first.release()
    assert client_of(server).get(KEYS.leader) == b"2|b"


def test_local_trust_runs_out_without_renewal(
    server: fakeredis.FakeServer, clock: FakeClock
) -> None:
    """A leader that could not renew stops trusting its lease before Redis expires it."""
    first = leadership(client_of(server), "a", clock)
    first.tick()
    clock.advance(10.0 * 0.8 + 0.01)
    assert not first.is_leader


def test_redis_down_keeps_stable_tokens_only(
    server: fakeredis.FakeServer, clock: FakeClock
) -> None:
    """With Redis unreachable the last leader may fetch stable tokens, never classic ones
    once its lease ran out; a standby may fetch neither."""
    first = leadership(client_of(server), "a", clock)
    second = leadership(client_of(server), "b", clock)
    first.tick()
    second.tick()
    server.connected = False
    clock.advance(9.0)
    first.tick()
    second.tick()
    assert first.may_fetch(TokenApi.STABLE)
    assert not first.may_fetch(TokenApi.CLASSIC)
    assert not second.may_fetch(TokenApi.STABLE)
    server.connected = True
    first.tick()
    assert first.may_fetch(TokenApi.CLASSIC)


def test_change_callback_fires_on_taking_and_losing(
    server: fakeredis.FakeServer, clock: FakeClock
) -> None:
    """The service is told when this producer starts and stops leading."""
    changes: list[bool] = []
    first = Leadership(
        client_of(server),
        lease_key=KEYS.leader,
        epoch_key=KEYS.leader_epoch,
        owner="a",
        on_change=changes.append,
        monotonic=clock,
    )
    first.tick()
    first.tick()
    client_of(server).set(KEYS.leader, "7|b")
    first.tick()
    assert changes == [True, False]


def test_fenced_write_is_refused(server: fakeredis.FakeServer, clock: FakeClock) -> None:
    """A write fenced with an owner that no longer holds the lease changes nothing."""
    store = TokenStore(client_of(server), KEYS)
    client_of(server).set(KEYS.leader, "2|b")
    assert store.write(make_update(version=5), fence_owner="b").written
    result = store.write(make_update(version=6, value="TOKEN-from-the-old-leader"), fence_owner="a")
    assert result.fenced
    assert not result.written
    assert store.read("wxapp1") == make_update(version=5)
    client_of(server).delete(KEYS.leader)
    assert store.write(make_update(version=7), fence_owner="b").fenced


def test_standby_neither_fetches_nor_publishes_but_follows_redis(
    server: fakeredis.FakeServer, clock: FakeClock
) -> None:
    """Only the leader fetches and publishes; the standby adopts what the leader wrote."""
    leader_gate = leadership(client_of(server), "a", clock)
    standby_gate = leadership(client_of(server), "b", clock)
    leader_gate.tick()
    standby_gate.tick()
    leader_fetcher, standby_fetcher = FakeFetcher(clock), FakeFetcher(clock)
    leader_published: list[object] = []
    standby_published: list[object] = []
    leader = gated_refresher(server, clock, leader_gate, leader_fetcher, leader_published)
    standby = gated_refresher(server, clock, standby_gate, standby_fetcher, standby_published)
    leader.step()
    standby.step()
    assert leader_fetcher.calls == 1
    assert standby_fetcher.calls == 0
    assert standby_published == []
    assert standby.held == leader.held
    assert leader.held is not None
    assert leader.held.epoch == 1


def test_takeover_costs_no_fetch_and_announces_the_token(
    server: fakeredis.FakeServer, clock: FakeClock
) -> None:
    """A standby that takes over re-publishes the current token and fetches only when due."""
    leader_gate = leadership(client_of(server), "a", clock)
    standby_gate = leadership(client_of(server), "b", clock)
    leader_gate.tick()
    standby_gate.tick()
    fetcher = FakeFetcher(clock)
    gated_refresher(server, clock, leader_gate, FakeFetcher(clock)).step()
    published: list[object] = []
    standby = gated_refresher(server, clock, standby_gate, fetcher, published)
    standby.step()
    client_of(server).delete(KEYS.leader)  # the leader died
    standby_gate.tick()
    standby.step()
    assert fetcher.calls == 0
    assert published == [standby.held]


def test_fenced_refresh_steps_down_and_publishes_nothing(
    server: fakeredis.FakeServer, clock: FakeClock
) -> None:
    """A paused old leader whose lease was taken meanwhile is fenced off when it writes."""
    old_gate = leadership(client_of(server), "a", clock)
    old_gate.tick()
    fetcher = FakeFetcher(clock)
    published: list[object] = []
    old = gated_refresher(server, clock, old_gate, fetcher, published)
    # While its fetch is in flight, its lease expires and another producer takes over.
    fetcher.during_next_fetch = lambda: client_of(server).set(KEYS.leader, "2|b")
    old.step()
    assert fetcher.calls == 1
    assert published == []
    assert old.stats.writes_fenced == 1
    assert not old_gate.is_leader
    assert TokenStore(client_of(server), KEYS).read("wxapp1") is None


def test_owner_with_separator_is_refused(server: fakeredis.FakeServer, clock: FakeClock) -> None:
    """An owner id containing the lease separator is a programming error."""
    with pytest.raises(ValueError, match="must not contain"):
        leadership(client_of(server), "a|b", clock)


def test_regaining_the_store_wakes_the_refreshers(
    server: fakeredis.FakeServer, clock: FakeClock
) -> None:
    """A leader whose lease is confirmed again after a Redis outage tells the service, so
    classic-token refreshers resume at once instead of after their standby wait."""
    changes: list[bool] = []
    first = Leadership(
        client_of(server),
        lease_key=KEYS.leader,
        epoch_key=KEYS.leader_epoch,
        owner="a",
        on_change=changes.append,
        monotonic=clock,
    )
    first.tick()
    server.connected = False
    clock.advance(9.0)
    first.tick()
    server.connected = True
    first.tick()
    assert changes == [True, True]


def test_margin_shorter_than_the_lease_is_warned_once(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A token whose refresh margin is shorter than the lease TTL gets one warning: a
    takeover after a crash could come too late for it."""
    timing = RefreshTiming(takeover_s=10.0)  # 30 s tokens: a 6 s margin
    refresher = build_refresher(
        APP,
        fetcher=FakeFetcher(clock, expires_in=30),
        timing=timing,
        clock=clock,
    )
    for _ in range(3):
        clock.advance(refresher.step())
    assert caplog.text.count("shorter than the lease TTL") == 1
    quiet = build_refresher(
        APP,
        fetcher=FakeFetcher(clock, expires_in=7200),
        timing=timing,
        clock=clock,
    )
    caplog.clear()
    quiet.step()
    assert "lease TTL" not in caplog.text


# ---- the check right before an upstream call (issue 8, items 5 and 6) ------------------------


def test_may_fetch_now_needs_enough_trusted_lease_left(
    server: fakeredis.FakeServer, clock: FakeClock
) -> None:
    """Right before a fetch: allowed only with at least `need_s` of trusted lease left."""
    lead = leadership(client_of(server), "a", clock, ttl_s=10.0)
    lead.tick()  # trusted for 8 s (TRUST_SHARE of the TTL)
    assert lead.lease_left_s() == pytest.approx(8.0)
    assert lead.may_fetch_now(TokenApi.CLASSIC, need_s=7.0)
    clock.advance(2.0)  # a slow audit write, a budget script, a version allocation ...
    assert not lead.may_fetch_now(TokenApi.CLASSIC, need_s=7.0), "the call could outlive it"
    assert lead.may_fetch_now(TokenApi.CLASSIC, need_s=5.0)


def test_a_suspended_host_does_not_trust_its_old_lease(
    server: fakeredis.FakeServer, clock: FakeClock
) -> None:
    """The lease clock counts suspended time (CLOCK_BOOTTIME): after a suspend longer than the
    lease, a producer may not fetch, though its monotonic clock barely moved."""
    lead = leadership(client_of(server), "a", clock)
    lead.tick()
    clock.advance(60.0)  # what CLOCK_BOOTTIME shows after a 60 s suspend
    assert not lead.is_leader
    assert not lead.may_fetch_now(TokenApi.CLASSIC, need_s=1.0)


def test_boottime_is_the_default_lease_clock() -> None:
    """Leadership trusts leases by `boottime`, which on Linux is CLOCK_BOOTTIME."""
    import inspect
    import sys
    import time

    from producer.leadership.clock import COUNTS_SUSPEND, boottime

    default = inspect.signature(Leadership.__init__).parameters["monotonic"].default
    assert default is boottime
    if sys.platform.startswith("linux"):
        assert COUNTS_SUSPEND
        assert abs(boottime() - time.clock_gettime(time.CLOCK_BOOTTIME)) < 60


def test_no_forced_refresh_without_a_confirmed_lease(
    server: fakeredis.FakeServer, clock: FakeClock
) -> None:
    """Cut off from Redis, the last leader may go on with normal-mode stable fetches, but
    never a forced refresh (stable included) once its lease is no longer confirmed."""
    lead = leadership(client_of(server), "a", clock)
    lead.tick()
    assert lead.may_fetch_now(TokenApi.STABLE, need_s=1.0, force_refresh=True)
    server.connected = False
    clock.advance(9.0)
    lead.tick()  # Redis away: the lease cannot be confirmed
    assert not lead.may_fetch_now(TokenApi.STABLE, need_s=1.0, force_refresh=True)
    assert not lead.may_fetch_now(TokenApi.CLASSIC, need_s=1.0)
    assert lead.may_fetch_now(TokenApi.STABLE, need_s=1.0), "normal mode hands out the same"


def test_a_squatted_lease_is_given_a_ttl_and_replaced(
    server: fakeredis.FakeServer, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """`SET leader "999999|squatter"` without a TTL: the next tick logs it as broken and
    gives it the lease TTL; once that runs out a producer leads (before: never)."""
    client = client_of(server)
    client.set(KEYS.leader, "999999|squatter")
    lead = leadership(client, "a", clock, ttl_s=10.0)
    lead.tick()
    assert not lead.is_leader
    assert 0 < client.pttl(KEYS.leader) <= 10_000
    assert any("broken value" in r.getMessage() for r in caplog.records)
    client.delete(KEYS.leader)  # as when that TTL runs out (fakeredis keeps real time)
    lead.tick()
    assert lead.is_leader


class SlowVersionStore(TokenStore):
    """A store whose version allocation waits out a Redis timeout (the fake clock moves)."""

    def __init__(self, client: fakeredis.FakeRedis, clock: FakeClock, delay_s: float) -> None:
        super().__init__(client, KEYS)
        self._clock = clock
        self.delay_s = delay_s

    def next_version(self, app_id: str, kind: object, *, now_s: float) -> int:  # type: ignore[override]
        self._clock.advance(self.delay_s)
        return super().next_version(app_id, kind, now_s=now_s)  # type: ignore[arg-type]

    def read_with_version(  # type: ignore[override]
        self, app_id: str, kind: object, *, now_s: float
    ) -> tuple[object, int]:
        """The snapshot read of a refresh about to fetch brings its version: as slow."""
        self._clock.advance(self.delay_s)
        return super().read_with_version(app_id, kind, now_s=now_s)  # type: ignore[arg-type]


def test_a_fetch_is_not_started_once_the_lease_ran_low_during_the_step(
    server: fakeredis.FakeServer, clock: FakeClock
) -> None:
    """The step began as leader, but the version allocation took seconds: right before the
    upstream call the lease has too little trusted life left, so no fetch starts; after a
    renewal the next step fetches."""
    gate = leadership(client_of(server), "a", clock, ttl_s=10.0)
    gate.tick()  # trusted for 8 s
    fetcher = FakeFetcher(clock)
    store = SlowVersionStore(client_of(server), clock, delay_s=5.0)
    timing = RefreshTiming(takeover_s=10.0, upstream_call_s=15.0)  # needs 4 s of lease
    refresher = build_refresher(
        APP,
        fetcher=fetcher,
        store=store,
        producer_id=gate.owner,
        timing=timing,
        gate=gate,
        clock=clock,
    )
    wait_s = refresher.step()
    assert fetcher.calls == 0, "a call started with 3 s of lease left could outlive it"
    assert refresher.held is None
    assert wait_s <= 1.0, "tried again soon, not after a backoff"
    store.delay_s = 0.0
    clock.advance(wait_s)
    gate.tick()
    refresher.step()
    assert fetcher.calls == 1
    assert refresher.held is not None


def test_lease_needed_for_a_call_is_capped_below_what_a_healthy_leader_holds() -> None:
    """A 15 s call timeout with a 10 s lease asks for 4 s: a healthy leader always has it."""
    assert RefreshTiming(takeover_s=10.0, upstream_call_s=15.0).lease_needed_s() == 4.0
    assert RefreshTiming(takeover_s=10.0, upstream_call_s=2.0).lease_needed_s() == 2.0
    assert RefreshTiming().lease_needed_s() == 0.0


def test_a_standby_may_not_start_a_call_even_when_none_needs_lease(
    server: fakeredis.FakeServer, clock: FakeClock
) -> None:
    """`need_s=0` (no call timeout configured) still needs a lease held now."""
    lead = leadership(client_of(server), "a", clock)
    standby = leadership(client_of(server), "b", clock)
    lead.tick()
    standby.tick()
    assert lead.may_fetch_now(TokenApi.CLASSIC, need_s=0.0)
    assert not standby.may_fetch_now(TokenApi.CLASSIC, need_s=0.0)
    assert not standby.may_fetch_now(TokenApi.STABLE, need_s=0.0, force_refresh=True)
