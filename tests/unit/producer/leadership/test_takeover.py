"""Two services on one Redis: the standby follows in batches and, on taking over,
re-publishes every token with no upstream call and schedules each credential's next step."""

from __future__ import annotations

import time
from pathlib import Path

import fakeredis
from pydantic import SecretStr

from consumer_lib.wire.keys import KeyLayout
from consumer_lib.wire.kinds import TokenKind
from producer.apps import AppConfig
from producer.service import ProducerService
from producer.settings import ProducerSettings
from tests.unit.producer.test_reload import Publisher, Upstream

APPS = [AppConfig(app_id=f"wxtake{n:03d}", secret=SecretStr("s3cret")) for n in range(40)]


def service(
    server: fakeredis.FakeServer, tmp_path: Path, name: str
) -> tuple[ProducerService, Upstream, Publisher]:
    upstream, publisher = Upstream(), Publisher()
    settings = ProducerSettings(
        apps_file=tmp_path / "unused.toml",
        wechat_base_url="http://127.0.0.1:9",
        insecure_accept_unsigned=True,
        key_prefix="wxtake",
        producer_id=name,
    )
    made = ProducerService(
        settings,
        APPS,
        redis_client=fakeredis.FakeRedis(server=server),
        fetcher=upstream,
        publisher=publisher,  # type: ignore[arg-type]
    )
    for refresher in made.refreshers:
        made.scheduler.add(refresher.key, refresher.step)
    return made, upstream, publisher


def test_a_standby_takes_over_with_every_token_and_no_upstream_call(tmp_path: Path) -> None:
    """The leader fetches 40 tokens; the standby follows them in one batched read; when the
    leader's lease is gone the standby re-publishes all 40 at once, fetches nothing, and
    its credentials are next due at their re-publish or refresh time, not now."""
    server = fakeredis.FakeServer()
    leader, leader_upstream, _ = service(server, tmp_path, "a")
    standby, standby_upstream, published = service(server, tmp_path, "b")
    leader.leadership.tick()
    standby.leadership.tick()
    assert leader.leadership.is_leader
    assert not standby.leadership.is_leader
    for refresher in leader.refreshers:
        refresher.step()
    assert leader_upstream.calls == len(APPS)
    standby.succession.follow()
    assert all(r.held is not None for r in standby.refreshers)
    idle_until = time.monotonic() + 300  # where a standby's own steps leave it
    for refresher in standby.refreshers:
        standby.scheduler.add(refresher.key, refresher.step, due_at=idle_until)

    fakeredis.FakeRedis(server=server).delete(KeyLayout("wxtake").leader)  # the leader died
    standby.leadership.tick()
    assert standby.leadership.is_leader
    assert standby.succession.takeover_pending
    standby.succession.follow()
    standby.succession.take_over()
    assert {u.app_id for u in published.published} == {a.app_id for a in APPS}
    assert {u.version for u in published.published} == {
        r.held.version for r in leader.refreshers if r.held is not None
    }
    assert standby_upstream.calls == 0
    now_m = time.monotonic()
    due = [standby.scheduler.due_at((a.app_id, TokenKind.ACCESS_TOKEN)) for a in APPS]
    assert all(d is not None and now_m + 1 < d < idle_until for d in due)
