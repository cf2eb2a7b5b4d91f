"""`ProducerService` with tickets: one scheduled entry per credential, refresh requests
routed by kind, a reload that changes an app's tickets (fakeredis, fake upstream)."""

from __future__ import annotations

import time
from pathlib import Path

import fakeredis
from pydantic import SecretStr

from consumer_lib import TokenKind
from consumer_lib.wire.refresh_request import RefreshRequest, fingerprint
from producer.app_config import AppConfig
from producer.service import ProducerService
from producer.settings import ProducerSettings
from tests.conftest import FakeClock
from tests.unit.producer.refresh.test_ticket_refresher import FakeUpstream
from tests.unit.producer.test_reload import Publisher

JSAPI, CARD = TokenKind.JSAPI_TICKET, TokenKind.WX_CARD_TICKET
OA = AppConfig(app_id="wxoa1", secret=SecretStr("s" * 32), tickets=(JSAPI, CARD))
PLAIN = AppConfig(app_id="wxplain", secret=SecretStr("p" * 32))


def make_service(tmp_path: Path, clock: FakeClock) -> tuple[ProducerService, FakeUpstream]:
    upstream = FakeUpstream(clock)
    settings = ProducerSettings(
        apps_file=tmp_path / "unused.toml",
        wechat_base_url="http://127.0.0.1:9",
        insecure_accept_unsigned=True,
        key_prefix="wxcreds",
    )
    service = ProducerService(
        settings,
        [OA, PLAIN],
        redis_client=fakeredis.FakeRedis(),
        fetcher=upstream,
        publisher=Publisher(),  # type: ignore[arg-type]
        clock=clock,
    )
    for refresher in service.refreshers:
        service.scheduler.add(refresher.key, refresher.step, due_at=time.monotonic() + 600)
    service.leadership.tick()
    return service, upstream


def test_one_refresher_per_credential_token_first(tmp_path: Path, clock: FakeClock) -> None:
    service, _ = make_service(tmp_path, clock)
    assert [r.key for r in service.refreshers] == [
        ("wxoa1", TokenKind.ACCESS_TOKEN),
        ("wxoa1", JSAPI),
        ("wxoa1", CARD),
        ("wxplain", TokenKind.ACCESS_TOKEN),
    ]
    assert service.refresher("wxplain", JSAPI) is None


def test_a_ticket_report_wakes_and_refreshes_the_ticket(tmp_path: Path, clock: FakeClock) -> None:
    """A report of the jsapi ticket goes to the ticket's refresher (woken now), not to the
    token's; a report of an unknown kind for the app is ignored."""
    service, upstream = make_service(tmp_path, clock)
    for refresher in service.refreshers:
        refresher.step()
    clock.advance(1)
    for refresher in service.refreshers:
        refresher.step()  # the tickets, once the token is held
    ticket = service.refresher("wxoa1", JSAPI)
    assert ticket is not None
    held = ticket.held
    assert held is not None
    report = RefreshRequest(
        app_id="wxoa1",
        kind=JSAPI,
        token_sha256=fingerprint(held.value),
        requester="client:test-1",
        requested_at=clock(),
    )
    service._on_request(report)
    assert service.scheduler.due_at(("wxoa1", JSAPI)) is not None
    assert service.scheduler.due_at(("wxoa1", JSAPI)) <= time.monotonic()  # type: ignore[operator]
    assert service.scheduler.due_at(("wxoa1", TokenKind.ACCESS_TOKEN)) > time.monotonic() + 60  # type: ignore[operator]
    token_calls = len(upstream.token_calls)
    ticket.step()
    renewed = ticket.held
    assert renewed is not None
    assert renewed.value != held.value
    assert len(upstream.token_calls) == token_calls
    service._on_request(report.model_copy(update={"app_id": "wxplain"}))  # no such ticket
    assert service.scheduler.due_at(("wxplain", JSAPI)) is None


def test_a_reload_with_other_tickets_replaces_that_apps_refreshers(
    tmp_path: Path, clock: FakeClock
) -> None:
    service, _ = make_service(tmp_path, clock)
    fewer = OA.model_copy(update={"tickets": (JSAPI,)})
    done = service.reload([fewer, PLAIN])
    assert done.changed == ["wxoa1"]
    assert sorted(service.scheduler.keys()) == sorted(  # type: ignore[type-var]
        [("wxoa1", TokenKind.ACCESS_TOKEN), ("wxoa1", JSAPI), ("wxplain", TokenKind.ACCESS_TOKEN)]
    )
    assert service.refresher("wxoa1", CARD) is None


def test_a_first_token_wakes_the_tickets_waiting_for_it(tmp_path: Path, clock: FakeClock) -> None:
    """At start-up a ticket that stepped before its app's token spent nothing; the token's
    first fetch wakes it, and its next step fetches at once (no wait for its next look)."""
    service, upstream = make_service(tmp_path, clock)
    ticket = service.refresher("wxoa1", JSAPI)
    token = service.refresher("wxoa1")
    assert ticket is not None
    assert token is not None
    ticket.step()
    assert upstream.ticket_calls == []
    service._task_of(token)()
    due = service.scheduler.due_at(("wxoa1", JSAPI))
    assert due is not None
    assert due <= time.monotonic()
    ticket.step()  # same fake-clock moment
    assert upstream.ticket_calls == [(JSAPI, token.held.value)]  # type: ignore[union-attr]
