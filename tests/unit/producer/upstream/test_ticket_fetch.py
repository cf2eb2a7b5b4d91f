"""A ticket fetch whose access token is refused refreshes the token once, then retries."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from consumer_lib import TokenKind
from producer.apps import AppConfig
from producer.upstream.errcodes import FailureKind
from producer.upstream.errors import FetchedToken, UpstreamError
from producer.upstream.tickets import fetch_ticket

APP = AppConfig(app_id="wxa", secret=SecretStr("s"), tickets=(TokenKind.JSAPI_TICKET,))
TICKET = FetchedToken("TICKET-1", 7200)


class FakeUpstream:
    """Answers ticket fetches from a script: a ticket, or an error per token."""

    def __init__(self, refused: set[str], other: UpstreamError | None = None) -> None:
        self.refused, self.other = refused, other
        self.asked: list[str] = []

    def fetch_ticket(self, app: AppConfig, kind: TokenKind, access_token: str) -> FetchedToken:
        self.asked.append(access_token)
        if self.other is not None:
            raise self.other
        if access_token in self.refused:
            raise UpstreamError("errcode 40001", kind=FailureKind.TOKEN_INVALID, errcode=40001)
        return TICKET


class Refresher:
    def __init__(self, answer: str | None) -> None:
        self.answer, self.calls = answer, list[str]()

    def __call__(self, refused: str) -> str | None:
        self.calls.append(refused)
        return self.answer


def test_live_token_fetches_the_ticket_without_refreshing() -> None:
    """A token upstream accepts gives the ticket; nothing is refreshed."""
    upstream, refresh = FakeUpstream(set()), Refresher("NEW")
    got = fetch_ticket(
        upstream, APP, TokenKind.JSAPI_TICKET, access_token="OLD", refresh_token=refresh
    )
    assert got == TICKET
    assert refresh.calls == []


def test_refused_token_is_refreshed_then_the_ticket_fetched_with_the_new_one() -> None:
    """40001 on the ticket fetch: the token is refreshed once, the ticket fetched with it."""
    upstream, refresh = FakeUpstream({"OLD"}), Refresher("NEW")
    got = fetch_ticket(
        upstream, APP, TokenKind.JSAPI_TICKET, access_token="OLD", refresh_token=refresh
    )
    assert got == TICKET
    assert (refresh.calls, upstream.asked) == (["OLD"], ["OLD", "NEW"])


@pytest.mark.parametrize(
    ("answer", "kind"), [(None, FailureKind.QUOTA), ("OLD", FailureKind.TRANSIENT)]
)
def test_refresh_not_allowed_fails_without_a_second_call(
    answer: str | None, kind: FailureKind
) -> None:
    """The token's budget refuses its refresh: a QUOTA error (the long backoff); the same
    token handed back: a transient one. Either way no second ticket call."""
    upstream = FakeUpstream({"OLD"})
    with pytest.raises(UpstreamError) as info:
        fetch_ticket(
            upstream,
            APP,
            TokenKind.JSAPI_TICKET,
            access_token="OLD",
            refresh_token=Refresher(answer),
        )
    assert (info.value.kind, info.value.errcode) == (kind, 40001)
    assert upstream.asked == ["OLD"]


def test_a_fresh_token_refused_too_is_a_config_failure_not_a_loop() -> None:
    """A second refusal, with a token just fetched, stops: something is misconfigured."""
    upstream, refresh = FakeUpstream({"OLD", "NEW"}), Refresher("NEW")
    with pytest.raises(UpstreamError) as info:
        fetch_ticket(
            upstream, APP, TokenKind.JSAPI_TICKET, access_token="OLD", refresh_token=refresh
        )
    assert info.value.kind is FailureKind.CONFIG
    assert len(refresh.calls) == 1


@pytest.mark.parametrize("kind", [FailureKind.QUOTA, FailureKind.TRANSIENT, FailureKind.CONFIG])
def test_other_failures_pass_through_without_refreshing(kind: FailureKind) -> None:
    """45009, busy or a bad configuration are not the token's fault: no refresh."""
    upstream, refresh = FakeUpstream(set(), UpstreamError("x", kind=kind)), Refresher("NEW")
    with pytest.raises(UpstreamError) as info:
        fetch_ticket(
            upstream, APP, TokenKind.JSAPI_TICKET, access_token="OLD", refresh_token=refresh
        )
    assert info.value.kind is kind
    assert refresh.calls == []


def test_no_token_held_is_transient() -> None:
    """Without an access token no call is made; the caller retries soon."""
    upstream = FakeUpstream(set())
    with pytest.raises(UpstreamError) as info:
        fetch_ticket(
            upstream, APP, TokenKind.JSAPI_TICKET, access_token=None, refresh_token=Refresher("N")
        )
    assert info.value.kind is FailureKind.TRANSIENT
    assert upstream.asked == []
