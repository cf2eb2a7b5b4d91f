"""Tickets and WeCom credentials kept by the refreshers, step by step on a fake clock
with fakeredis and a fake upstream that behaves like WeChat's and WeCom's."""

from __future__ import annotations

import fakeredis
from pydantic import SecretStr

from consumer_lib import TokenKind, TokenUpdate
from consumer_lib.errors import InvalidUpdate
from consumer_lib.wire.keys import KeyLayout
from consumer_lib.wire.refresh_request import RefreshRequest, fingerprint
from producer.app_config import AppConfig, TokenApi
from producer.limits.budget import RefreshBudget, budget_day
from producer.limits.ticket_budget import TicketBudget
from producer.refresh.refresher import AppRefresher, RefreshTiming
from producer.refresh.sources import NO_TOKEN_RETRY_S, TicketSource
from producer.store.tokens import TokenStore
from producer.upstream.errcodes import FailureKind
from producer.upstream.errors import FetchedToken, UpstreamError
from producer.upstream.tickets import TOKEN_BUSY_RETRY_S
from tests.conftest import FakeClock
from tests.unit.producer.builders import build_refresher

JSAPI, CARD = TokenKind.JSAPI_TICKET, TokenKind.WX_CARD_TICKET
AGENT_TICKET = TokenKind.AGENT_CONFIG_TICKET
OA = AppConfig(app_id="wxoa1", secret=SecretStr("s" * 32), tickets=(JSAPI, CARD))
AGENT = AppConfig(
    app_id="wwagent1",
    secret=SecretStr("w" * 32),
    platform="wecom",
    token_api=TokenApi.WECOM,
    corp_id="wwcorp",
    agent_id="1000002",
    tickets=(AGENT_TICKET,),
)


class FakeUpstream:
    """Tokens live `lifetime_s`; `same_until_expiry` gives the held token back until it
    has expired (WeCom). Tickets are accepted only with a live token."""

    def __init__(self, clock: FakeClock, *, lifetime_s: int = 7200, same: bool = False) -> None:
        self.clock, self.lifetime_s, self.same = clock, lifetime_s, same
        self.token: tuple[str, float] | None = None  # value, expires at
        self.live_tokens: set[str] = set()
        self.token_calls: list[float] = []
        self.ticket_calls: list[tuple[TokenKind, str]] = []
        self.refuse_every_token = False

    def fetch(self, app: AppConfig, *, force_refresh: bool = False) -> FetchedToken:
        now_s = self.clock()
        self.token_calls.append(now_s)
        if self.same and self.token is not None and now_s < self.token[1]:
            return FetchedToken(value=self.token[0], expires_in_s=int(self.token[1] - now_s))
        value = f"TOKEN-{len(self.token_calls):03d}-{'x' * 30}"
        self.token = (value, now_s + self.lifetime_s)
        self.live_tokens.add(value)
        return FetchedToken(value=value, expires_in_s=self.lifetime_s)

    def fetch_ticket(self, app: AppConfig, kind: TokenKind, access_token: str) -> FetchedToken:
        self.ticket_calls.append((kind, access_token))
        if self.refuse_every_token or access_token not in self.live_tokens:
            raise UpstreamError("40001 invalid credential", kind=FailureKind.TOKEN_INVALID)
        value = f"TICKET-{kind.value}-{len(self.ticket_calls):03d}-{'t' * 20}"
        return FetchedToken(value=value, expires_in_s=self.lifetime_s)


class Rig:
    def __init__(
        self,
        clock: FakeClock,
        app: AppConfig = OA,
        *,
        upstream: FakeUpstream | None = None,
        ticket_budget: TicketBudget | None = None,
        budget: RefreshBudget | None = None,
    ) -> None:
        self.clock = clock
        self.redis = fakeredis.FakeRedis()
        self.upstream = upstream or FakeUpstream(clock)
        self.published: list[TokenUpdate] = []
        self.failures: list[tuple[str, TokenKind, UpstreamError]] = []
        common = {
            "fetcher": self.upstream,
            "store": TokenStore(self.redis),
            "publish": self.published.append,
            "timing": RefreshTiming(),
            "clock": clock,
            "rand": lambda: 0.5,
            "on_fetch_failed": lambda *failure: self.failures.append(failure),
            "budget": budget,
        }
        self.token = build_refresher(app, **common)  # type: ignore[arg-type]
        self.tickets = {
            kind: build_refresher(
                app,
                kind=kind,
                source=TicketSource(
                    self.token, self.upstream, clock, ticket_budget=ticket_budget, budget=budget
                ),
                **common,  # type: ignore[arg-type]
            )
            for kind in app.tickets
        }

    def all(self) -> list[AppRefresher]:
        return [self.token, *self.tickets.values()]

    def run_until(self, end_s: float) -> None:
        """Step every credential whenever it asks to be, until `end_s`; each published
        update must be valid when published."""
        due = dict.fromkeys(self.all(), self.clock())
        while True:
            refresher, at_s = min(due.items(), key=lambda item: item[1])
            if at_s > end_s:
                break
            self.clock.now_s = max(self.clock(), at_s)
            before = len(self.published)
            due[refresher] = self.clock() + refresher.step()
            for update in self.published[before:]:
                assert update.is_valid_at(self.clock()), update

    def published_values(self, kind: TokenKind) -> list[str]:
        return list(dict.fromkeys(u.value for u in self.published if u.kind is kind))


def test_a_ticket_waits_for_the_token_then_is_fetched_with_it(clock: FakeClock) -> None:
    """Before the app's token is held a ticket spends nothing; then each ticket is fetched
    with that token and published under its own kind with its own version."""
    rig = Rig(clock)
    assert rig.tickets[JSAPI].step() <= NO_TOKEN_RETRY_S
    assert rig.upstream.ticket_calls == []
    assert rig.failures == []
    rig.token.step()
    token = rig.token.held
    assert token is not None
    clock.advance(NO_TOKEN_RETRY_S)
    for ticket in rig.tickets.values():
        ticket.step()
    assert rig.upstream.ticket_calls == [(JSAPI, token.value), (CARD, token.value)]
    for kind in (JSAPI, CARD):
        held = rig.tickets[kind].held
        assert held is not None
        assert held.kind is kind
        assert rig.redis.get(KeyLayout().token(OA.app_id, kind)) is not None
    assert {u.kind for u in rig.published} == {TokenKind.ACCESS_TOKEN, JSAPI, CARD}


class CountingStore(TokenStore):
    """Counts the snapshot reads of single credentials (with a version or without)."""

    def __init__(self, client: fakeredis.FakeRedis) -> None:
        super().__init__(client)
        self.reads: list[tuple[str, TokenKind]] = []

    def read(self, app_id: str, kind: TokenKind = TokenKind.ACCESS_TOKEN) -> TokenUpdate | None:
        self.reads.append((app_id, kind))
        return super().read(app_id, kind)

    def read_with_version(
        self, app_id: str, kind: TokenKind, *, now_s: float
    ) -> tuple[TokenUpdate | InvalidUpdate | None, int]:
        self.reads.append((app_id, kind))
        return super().read_with_version(app_id, kind, now_s=now_s)


def test_a_ticket_without_its_token_reads_nothing_from_redis(clock: FakeClock) -> None:
    """In the service a follower feeds every credential, and a step reads its own snapshot
    only before an upstream call. A ticket whose token has not arrived makes no call, so
    it reads nothing (at start-up, 20,000 tickets read Redis once each for nothing)."""
    upstream = FakeUpstream(clock)
    store = CountingStore(fakeredis.FakeRedis())
    common = {
        "fetcher": upstream,
        "store": store,
        "clock": clock,
        "follows_store": False,
    }
    token = build_refresher(OA, **common)  # type: ignore[arg-type]
    source = TicketSource(token, upstream, clock)  # type: ignore[arg-type]
    ticket = build_refresher(OA, kind=JSAPI, source=source, **common)  # type: ignore[arg-type]
    assert ticket.step() <= NO_TOKEN_RETRY_S
    assert store.reads == []
    token.step()
    assert store.reads == [(OA.app_id, TokenKind.ACCESS_TOKEN)]  # before its fetch
    ticket.dependency_arrived()  # the service's wake-up
    ticket.step()
    assert store.reads == [(OA.app_id, TokenKind.ACCESS_TOKEN), (OA.app_id, JSAPI)]
    assert ticket.held is not None


def test_a_token_refresh_leaves_the_tickets_on_their_own_schedule(clock: FakeClock) -> None:
    """Over three lifetimes: one token fetch and one fetch of each ticket per lifetime; a
    token refresh does not re-fetch the tickets."""
    rig = Rig(clock)
    start_s = clock()
    rig.run_until(start_s + 3 * (7200 - 300) - 1)  # refreshed 300 s before the expiry
    ticket_kinds = [kind for kind, _ in rig.upstream.ticket_calls]
    print(
        f"3 lifetimes: {len(rig.upstream.token_calls)} token fetches, "
        f"{ticket_kinds.count(JSAPI)} jsapi, {ticket_kinds.count(CARD)} wx_card"
    )
    assert len(rig.upstream.token_calls) == 3
    assert ticket_kinds.count(JSAPI) == ticket_kinds.count(CARD) == 3
    assert len(rig.published_values(JSAPI)) == 3


def test_40001_on_a_ticket_refreshes_the_token_once_then_the_ticket(clock: FakeClock) -> None:
    """Upstream dropped the held token early: the ticket fetch refreshes the token (one
    fetch), publishes it, and fetches the ticket with the new one."""
    rig = Rig(clock)
    rig.token.step()
    old = rig.token.held
    assert old is not None
    rig.upstream.live_tokens.clear()  # an outside fetch superseded it
    rig.tickets[JSAPI].step()
    new = rig.token.held
    assert new is not None
    assert new.value != old.value
    assert len(rig.upstream.token_calls) == 2
    assert rig.upstream.ticket_calls == [(JSAPI, old.value), (JSAPI, new.value)]
    assert rig.published_values(TokenKind.ACCESS_TOKEN) == [old.value, new.value]
    assert rig.tickets[JSAPI].held is not None
    # The other ticket uses the new token at once: no second token refresh.
    rig.tickets[CARD].step()
    assert len(rig.upstream.token_calls) == 2
    assert rig.upstream.ticket_calls[-1] == (CARD, new.value)


def test_a_second_refusal_is_a_config_error_not_a_loop(clock: FakeClock) -> None:
    rig = Rig(clock)
    rig.token.step()
    rig.upstream.refuse_every_token = True
    delay_s = rig.tickets[JSAPI].step()
    assert len(rig.upstream.token_calls) == 2  # one refresh of the token, no more
    assert len(rig.upstream.ticket_calls) == 2
    assert rig.tickets[JSAPI].held is None
    assert [(kind, exc.kind) for _, kind, exc in rig.failures] == [(JSAPI, FailureKind.CONFIG)]
    assert delay_s > 60  # a configuration error is not retried in a hurry


def test_a_ticket_never_waits_on_the_token_lock(clock: FakeClock) -> None:
    """While the token's step runs, a refused ticket does not wait for it, nor back off as
    for a quota: it asks again a second later (no failure recorded) and then gets the
    token refreshed once and its ticket."""
    rig = Rig(clock)
    rig.token.step()
    rig.upstream.live_tokens.clear()
    ticket = rig.tickets[JSAPI]
    with rig.token.step_lock:
        delay_s = ticket.step()
    assert len(rig.upstream.token_calls) == 1
    assert rig.failures == []
    assert delay_s == TOKEN_BUSY_RETRY_S
    clock.advance(delay_s)
    ticket.step()
    assert len(rig.upstream.token_calls) == 2  # the ticket's one refresh of the token
    token, held = rig.token.held, ticket.held
    assert token is not None
    assert held is not None
    assert rig.upstream.ticket_calls[-1] == (JSAPI, token.value)
    assert rig.failures == []


def test_a_refused_token_refresh_backs_the_ticket_off_as_for_quota(clock: FakeClock) -> None:
    """Only a real budget refusal of the token refresh is a quota failure (long backoff)."""
    budget = RefreshBudget(fakeredis.FakeRedis(), KeyLayout("wxrb"), clock=clock, forced_per_day=0)
    rig = Rig(clock, budget=budget)
    rig.token.step()
    rig.upstream.live_tokens.clear()
    delay_s = rig.tickets[JSAPI].step()
    assert len(rig.upstream.token_calls) == 1
    assert [exc.kind for _, _, exc in rig.failures] == [FailureKind.QUOTA]
    assert delay_s >= 30  # quota_retry_base_s 60, jittered


def test_a_failed_token_refresh_retries_the_ticket_soon(clock: FakeClock) -> None:
    """The token refresh for a refused ticket failed upstream: a transient failure, the
    short backoff, not the quota one."""
    rig = Rig(clock)
    rig.token.step()
    rig.upstream.live_tokens.clear()

    def down(app: AppConfig, *, force_refresh: bool = False) -> FetchedToken:
        raise UpstreamError("-1 system busy", kind=FailureKind.TRANSIENT)

    rig.upstream.fetch = down  # type: ignore[method-assign]
    delay_s = rig.tickets[JSAPI].step()
    assert [(kind, exc.kind) for _, kind, exc in rig.failures] == [
        (TokenKind.ACCESS_TOKEN, FailureKind.TRANSIENT),
        (JSAPI, FailureKind.TRANSIENT),
    ]
    assert delay_s <= 2 * RefreshTiming().retry_base_s


def test_wecom_same_token_rule_one_fetch_per_lifetime(clock: FakeClock) -> None:
    """WeCom hands back the same token until it has expired: the refresher does not ask
    ever faster towards the expiry; one call per lifetime, the successor at once."""
    upstream = FakeUpstream(clock, lifetime_s=600, same=True)
    rig = Rig(clock, AGENT, upstream=upstream)
    start_s = clock()
    rig.run_until(start_s + 4 * 600 - 1)
    tokens = rig.published_values(TokenKind.ACCESS_TOKEN)
    print(f"WeCom, 4 lifetimes: {len(upstream.token_calls)} gettoken calls, {len(tokens)} tokens")
    assert len(upstream.token_calls) == 4
    assert len(tokens) == 4
    firsts = {v: min(u.issued_at for u in rig.published if u.value == v) for v in tokens}
    for value, expiry in zip(tokens[1:], [start_s + 600 * n for n in (1, 2, 3)], strict=True):
        assert expiry <= firsts[value] < expiry + 1  # the successor right after the expiry


def test_unchanged_answer_keeps_expiry_and_publishes_nothing(clock: FakeClock) -> None:
    """A refresh that gets the held token back publishes no new version and keeps the
    expiry of the first answer, never the later one a shrinking expires_in implies."""
    upstream = FakeUpstream(clock, lifetime_s=600, same=True)
    rig = Rig(clock, AGENT, upstream=upstream)
    rig.token.step()
    first = rig.token.held
    assert first is not None
    clock.advance(300)
    rig.token.held = first.model_copy(update={"expires_at": first.expires_at - 400})
    rig.token.retry_at = 0.0
    clock.advance(1)  # past the (shortened) refresh time: it asks, gets the same one
    rig.token.step()
    assert len(upstream.token_calls) == 2
    held = rig.token.held
    assert held is not None
    assert held.version == first.version
    assert held.expires_at == first.expires_at - 400


def test_wecom_ticket_budget_refused_backs_off_until_allowed(clock: FakeClock) -> None:
    """Over the agent's hourly ticket limit no call is made; the ticket is asked again
    when the budget allows."""
    budget = TicketBudget(fakeredis.FakeRedis(), KeyLayout("wxtb"), clock=clock, agent_per_hour=1)
    upstream = FakeUpstream(clock, lifetime_s=600, same=True)
    rig = Rig(clock, AGENT, upstream=upstream, ticket_budget=budget)
    rig.token.step()
    ticket = rig.tickets[AGENT_TICKET]
    ticket.step()
    assert len(upstream.ticket_calls) == 1
    clock.advance(601)
    rig.token.step()
    delay_s = ticket.step()
    assert len(upstream.ticket_calls) == 1  # refused by the budget: nothing spent upstream
    assert 2000 < delay_s <= 3600
    clock.advance(delay_s)
    rig.token.step()
    ticket.step()
    assert len(upstream.ticket_calls) == 2


def test_passive_refresh_of_a_ticket_refetches_the_ticket_not_the_token(
    clock: FakeClock,
) -> None:
    rig = Rig(clock)
    rig.token.step()
    rig.tickets[JSAPI].step()
    held = rig.tickets[JSAPI].held
    assert held is not None
    rig.tickets[JSAPI].request_refresh(
        RefreshRequest(
            app_id=OA.app_id,
            kind=JSAPI,
            token_sha256=fingerprint(held.value),
            requester="client:test-1",
            requested_at=clock(),
        )
    )
    rig.tickets[JSAPI].step()
    renewed = rig.tickets[JSAPI].held
    assert renewed is not None
    assert renewed.value != held.value
    assert renewed.version > held.version
    assert len(rig.upstream.token_calls) == 1
    assert rig.published[-1] == renewed


def test_an_unchanged_answer_to_a_report_keeps_the_usual_schedule(clock: FakeClock) -> None:
    """A report answered with the held value back (upstream still considers it fresh)
    does not push the next refresh to the expiry: it stays at the usual margin."""
    upstream = FakeUpstream(clock, same=True)
    rig = Rig(clock, OA.model_copy(update={"tickets": ()}), upstream=upstream)
    start_s = clock()
    rig.token.step()
    held = rig.token.held
    assert held is not None
    clock.advance(100)
    rig.token.request_refresh(
        RefreshRequest(
            app_id=OA.app_id,
            token_sha256=fingerprint(held.value),
            requester="client:test-1",
            requested_at=clock(),
        )
    )
    rig.token.step()
    assert upstream.token_calls == [start_s, start_s + 100]
    rig.run_until(start_s + 7200 - 1)
    assert upstream.token_calls[2] == start_s + 7200 - 300  # the usual margin, not later


def report(app: AppConfig, kind: TokenKind, value: str, at_s: float) -> RefreshRequest:
    return RefreshRequest(
        app_id=app.app_id,
        kind=kind,
        token_sha256=fingerprint(value),
        requester="client:test-1",
        requested_at=at_s,
    )


def test_a_ticket_report_spends_its_own_budget_not_the_tokens(clock: FakeClock) -> None:
    """Reports of the jsapi ticket, then of the token right after: the token's forced
    refresh is still allowed (a ticket report spent neither its day's count nor its 30 s
    spacing); the ticket's reports have their own count and spacing."""
    client = fakeredis.FakeRedis()
    keys = KeyLayout("wxrb")
    budget = RefreshBudget(client, keys, clock=clock)
    rig = Rig(clock, budget=budget)
    rig.token.step()
    ticket = rig.tickets[JSAPI]
    ticket.step()
    first = ticket.held
    assert first is not None
    ticket.request_refresh(report(OA, JSAPI, first.value, clock()))
    ticket.step()
    second = ticket.held
    assert second is not None
    assert second.value != first.value
    token = rig.token.held
    assert token is not None
    rig.token.request_refresh(report(OA, TokenKind.ACCESS_TOKEN, token.value, clock()))
    rig.token.step()
    renewed = rig.token.held
    assert renewed is not None
    assert renewed.value != token.value
    day = budget_day(clock())
    assert int(client.get(keys.budget_count(OA.app_id, "stable", day)) or 0) == 1
    assert int(client.get(keys.budget_count(OA.app_id, "jsapi_ticket", day)) or 0) == 1
    # A second ticket report within 30 s is over the ticket's own spacing: re-published.
    ticket.request_refresh(report(OA, JSAPI, second.value, clock()))
    ticket.step()
    held = ticket.held
    assert held is not None
    assert held.value == second.value
    assert ticket.stats.requests_over_budget == 1


def test_refreshers_carry_no_instance_dict(clock: FakeClock) -> None:
    """A fleet keeps 30,000 refreshers: an instance dict cost about 0.8 KiB each (a leader
    of 30,000 credentials went from 313 to 237 MiB without them). A part of a credential's
    state without `__slots__` would bring the dict back silently."""
    rig = Rig(clock)
    rig.run_until(clock() + 10)
    for refresher in rig.all():
        parts = [refresher, refresher.stats, refresher.reports, refresher.operator]
        parts += [refresher.retries, refresher.retries.transient, refresher.request_audit]
        for part in parts:
            assert not hasattr(part, "__dict__"), type(part).__name__
