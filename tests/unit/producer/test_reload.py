"""Reloading the apps file in a running service: added, removed, changed and unchanged apps,
and a bad file that changes nothing."""

from __future__ import annotations

import logging
from pathlib import Path

import fakeredis
import pytest

from consumer_lib.wire.keys import KeyLayout
from consumer_lib.wire.kinds import TokenKind
from consumer_lib.wire.update import TokenUpdate
from producer.__main__ import reload_apps
from producer.apps import AppConfig, load_apps
from producer.leadership.announcement import read_announcement
from producer.service import ProducerService
from producer.settings import ProducerSettings
from producer.upstream.wechat import FetchedToken
from tests.conftest import FakeClock

BASE_URL = "http://127.0.0.1:9"
CLOCK = FakeClock()


class Upstream:
    """Records which secret each fetch used."""

    def __init__(self) -> None:
        self.secrets: list[tuple[str, str]] = []

    @property
    def calls(self) -> int:
        return len(self.secrets)

    def fetch(self, app: AppConfig, *, force_refresh: bool = False) -> FetchedToken:
        self.secrets.append((app.app_id, app.secret.get_secret_value()))
        return FetchedToken(value=f"TOKEN-{app.app_id}-{len(self.secrets):04d}", expires_in_s=7200)


class Publisher:
    def __init__(self) -> None:
        self.published: list[TokenUpdate] = []

    def publish(self, update: TokenUpdate) -> None:
        self.published.append(update)

    def start(self) -> Publisher:
        return self

    def close(self, timeout_s: float = 0) -> None:
        pass


def write_apps(path: Path, apps: dict[str, str]) -> None:
    path.write_text("".join(f'[[apps]]\napp_id = "{a}"\nsecret = "{s}"\n' for a, s in apps.items()))


@pytest.fixture
def apps_file(tmp_path: Path) -> Path:
    path = tmp_path / "apps.toml"
    write_apps(path, {"wxkeep": "s-keep", "wxchange": "s-old", "wxdrop": "s-drop"})
    return path


@pytest.fixture
def service(apps_file: Path) -> tuple[ProducerService, Upstream, ProducerSettings]:
    settings = ProducerSettings(
        apps_file=apps_file,
        wechat_base_url=BASE_URL,
        insecure_accept_unsigned=True,
        key_prefix="wxreload",
    )
    upstream = Upstream()
    made = ProducerService(
        settings,
        load_apps(apps_file, wechat_base_url=BASE_URL),
        redis_client=fakeredis.FakeRedis(),
        fetcher=upstream,
        publisher=Publisher(),  # type: ignore[arg-type]
        clock=CLOCK,
    )
    for refresher in made.refreshers:
        made.scheduler.add(refresher.key, refresher.step)
    return made, upstream, settings


def test_a_good_file_adds_removes_and_changes_only_what_changed(
    service: tuple[ProducerService, Upstream, ProducerSettings], apps_file: Path
) -> None:
    """New apps are scheduled at once, removed ones are no longer scheduled, a changed
    secret is used at the next fetch, and an unchanged app keeps its refresher as it was."""
    svc, upstream, _ = service
    svc.leadership.tick()
    for refresher in svc.refreshers:
        refresher.step()
    kept = svc.refresher("wxkeep")
    write_apps(apps_file, {"wxkeep": "s-keep", "wxchange": "s-new", "wxadd": "s-add"})
    done = svc.reload(load_apps(apps_file, wechat_base_url=BASE_URL))
    assert (done.added, done.removed, done.changed, done.unchanged) == (
        ["wxadd"],
        ["wxdrop"],
        ["wxchange"],
        1,
    )
    assert sorted(svc.scheduler.keys()) == [  # type: ignore[type-var]
        (app_id, TokenKind.ACCESS_TOKEN) for app_id in ("wxadd", "wxchange", "wxkeep")
    ]
    assert svc.refresher("wxdrop") is None
    assert svc.refresher("wxkeep") is kept
    assert kept is not None
    assert kept.held is not None
    due = svc.scheduler.due_at(("wxadd", TokenKind.ACCESS_TOKEN))
    assert due is not None
    svc.scheduler.run_due(due)  # the new app is due now (the pool is not running here)
    changed = svc.refresher("wxchange")
    assert changed is not None
    CLOCK.advance(7200 - 300)  # the refresh margin of its token
    changed.step()
    assert upstream.secrets[-1] == ("wxchange", "s-new")


def test_a_bad_file_keeps_the_running_set_and_says_why(
    service: tuple[ProducerService, Upstream, ProducerSettings],
    apps_file: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A file that does not load changes nothing and logs one ERROR line naming it."""
    svc, _, settings = service
    before = {r.app.app_id: r for r in svc.refreshers}
    for broken in ('[[apps]]\napp_id = "wxonly"\n', "not toml at all [[[", ""):
        apps_file.write_text(broken)
        caplog.clear()
        reload_apps(svc, settings)
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1, broken
        assert str(apps_file) in errors[0].getMessage()
        assert "not reloaded" in errors[0].getMessage()
        assert {r.app.app_id: r for r in svc.refreshers} == before
    assert sorted(svc.scheduler.keys()) == [(a, TokenKind.ACCESS_TOKEN) for a in sorted(before)]  # type: ignore[type-var]


def test_a_bad_file_counts_apps_and_credentials_apart(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Two apps, one with a jsapi ticket, are 2 apps and 3 credentials: the ERROR line of a
    broken reload says both, not "3 app(s)"."""

    class TicketUpstream(Upstream):
        def fetch_ticket(self, app: AppConfig, kind: TokenKind, access_token: str) -> FetchedToken:
            return FetchedToken(value=f"TICKET-{app.app_id}-0001", expires_in_s=7200)

    path = tmp_path / "apps.toml"
    path.write_text(
        '[[apps]]\napp_id = "wxticket"\nsecret = "s-1"\ntickets = ["jsapi"]\n'
        '[[apps]]\napp_id = "wxplain"\nsecret = "s-2"\n'
    )
    settings = ProducerSettings(
        apps_file=path, wechat_base_url=BASE_URL, insecure_accept_unsigned=True, key_prefix="wxr2"
    )
    svc = ProducerService(
        settings,
        load_apps(path, wechat_base_url=BASE_URL),
        redis_client=fakeredis.FakeRedis(),
        fetcher=TicketUpstream(),
        publisher=Publisher(),  # type: ignore[arg-type]
        clock=CLOCK,
    )
    assert len(svc.refreshers) == 3
    path.write_text("not toml at all [[[")
    caplog.clear()
    reload_apps(svc, settings)
    [error] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "still serving 2 app(s) (3 credential(s))" in error.getMessage()


def test_the_leader_announces_the_apps_it_serves(
    service: tuple[ProducerService, Upstream, ProducerSettings], apps_file: Path
) -> None:
    """After a reload the leader's announcement lists the new set, for `wxtoken status`."""
    svc, _, _ = service
    svc.leadership.tick()
    assert svc.leadership.is_leader
    write_apps(apps_file, {"wxkeep": "s-keep", "wxnew": "s-new"})
    reload_apps(svc, svc._settings)
    served = read_announcement(svc._redis, KeyLayout("wxreload"))
    assert served is not None
    assert served.apps == ["wxkeep", "wxnew"]
    assert served.owner == svc.leadership.owner


def test_a_garbage_announcement_is_an_invalid_update() -> None:
    """What status reads from Redis is validated like any outside input."""
    from consumer_lib.errors import InvalidUpdate

    client = fakeredis.FakeRedis()
    keys = KeyLayout("wxreload")
    assert read_announcement(client, keys) is None
    for garbage in (b"{", b"[]", b'{"apps": ["bad id!"]}', b"x" * 9_000_000):
        client.set(keys.served, garbage)
        with pytest.raises(InvalidUpdate):
            read_announcement(client, keys)


@pytest.mark.parametrize("broken_file", [False, True])
def test_sighup_retries_a_failed_fetch_now(
    service: tuple[ProducerService, Upstream, ProducerSettings], broken_file: bool
) -> None:
    """A credential waiting out a configuration error's slow retry is fetched at its next
    step after a reload (SIGHUP, the operator's "try now"), even when the apps file does not
    load; the others are not woken."""
    from producer.upstream.errcodes import FailureKind
    from producer.upstream.wechat import UpstreamError

    svc, upstream, settings = service
    svc.leadership.tick()
    for refresher in svc.refreshers:
        if refresher.app.app_id != "wxdrop":
            refresher.step()
    failing = svc.refresher("wxdrop")
    assert failing is not None
    working = upstream.fetch

    def refuse(app: AppConfig, *, force_refresh: bool = False) -> FetchedToken:
        raise UpstreamError("errcode 40164: invalid ip", kind=FailureKind.CONFIG, errcode=40164)

    upstream.fetch = refuse  # type: ignore[method-assign]
    assert failing.step() > 250  # nothing held: the slow configuration pace
    upstream.fetch = working  # type: ignore[method-assign]
    calls = upstream.calls
    failing.step()
    assert upstream.calls == calls  # still waiting
    if broken_file:  # the file does not load: nothing changes, but the retry happens
        settings.apps_file.write_text("not toml at all [[[")
    reload_apps(svc, settings)
    assert svc.scheduler.due_at(failing.key) is not None
    failing.step()
    assert upstream.calls == calls + 1
    assert failing.held is not None
