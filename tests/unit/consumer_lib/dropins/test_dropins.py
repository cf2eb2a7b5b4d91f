"""The drop-ins' parts without a network: WeChat answers parsed defensively, the token put
in the URL, and the successor wait (with `responses` standing in for WeChat)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import requests
import responses

from consumer_lib import TokenKind, TokenUnavailable, TokenUpdate
from consumer_lib.dropins.requests_auth import WeChatTokenAuth, with_token
from consumer_lib.dropins.successor import Successors, errcode_of

URL = "https://api.weixin.qq.com/cgi-bin/getcallbackip"


class FakeTokens:
    def __init__(self, token: str) -> None:
        self.token = token
        self.reports: list[str] = []
        self.callbacks: list[Callable[[TokenUpdate], None]] = []
        self.successor: str | None = None

    def on_update(self, callback: Callable[[TokenUpdate], None]) -> None:
        self.callbacks.append(callback)

    def get_token(
        self, app_id: str, timeout: float = 5.0, *, kind: TokenKind = TokenKind.ACCESS_TOKEN
    ) -> str:
        return self.token

    def report_invalid(self, app_id: str, token: str, *, kind: TokenKind, reason: str) -> bool:
        self.reports.append(token)
        if self.successor is not None:
            self.token = self.successor  # the producer's push, as seen by get_token
        return True


@pytest.mark.parametrize(
    ("body", "errcode"),
    [
        (b'{"errcode": 40001, "errmsg": "invalid"}', 40001),
        (b'{"errcode": "42001"}', 42001),
        (b'{"errcode": -1}', -1),
        (b'{"errcode": true}', None),
        (b'{"errcode": "x"}', None),
        (b'{"errcode": 4.0e4}', None),
        (b'{"ip_list": []}', None),
        (b"[40001]", None),
        (b"not json", None),
        (b"{", None),
        (b"", None),
        (b"\xff\xfe{", None),
    ],
)
def test_errcode_of_garbage(body: bytes, errcode: int | None) -> None:
    """Only an integer errcode (or its digits) counts; anything else is none."""
    assert errcode_of(body) == errcode


def test_with_token_replaces_any_access_token_and_keeps_the_rest() -> None:
    """An access_token already in the URL is replaced, other parameters are kept."""
    url = with_token(URL + "?access_token=old&lang=zh_CN", "NEW")
    assert url == URL + "?lang=zh_CN&access_token=NEW"


@responses.activate
def test_requests_auth_reports_and_retries_once() -> None:
    """40001 -> report, retry with the successor; the second answer is returned."""
    tokens = FakeTokens("OLD-TOKEN")
    tokens.successor = "NEW-TOKEN"
    responses.get(URL, json={"errcode": 40001, "errmsg": "invalid credential"})
    responses.get(URL, json={"ip_list": ["1.2.3.4"]})
    answer = requests.get(URL, auth=WeChatTokenAuth(tokens, "wxapp1"), timeout=5)  # type: ignore[arg-type]
    assert answer.json() == {"ip_list": ["1.2.3.4"]}
    assert tokens.reports == ["OLD-TOKEN"]
    assert "access_token=OLD-TOKEN" in responses.calls[0].request.url
    assert "access_token=NEW-TOKEN" in responses.calls[1].request.url


@responses.activate
def test_requests_auth_never_retries_twice() -> None:
    """A successor rejected too is returned as WeChat sent it: no loop, one report."""
    tokens = FakeTokens("OLD-TOKEN")
    tokens.successor = "NEW-TOKEN"
    responses.get(URL, json={"errcode": 40001, "errmsg": "invalid credential"})
    responses.get(URL, json={"errcode": 40001, "errmsg": "invalid credential"})
    answer = requests.get(URL, auth=WeChatTokenAuth(tokens, "wxapp1"), timeout=5)  # type: ignore[arg-type]
    assert answer.json()["errcode"] == 40001
    assert len(responses.calls) == 2
    assert tokens.reports == ["OLD-TOKEN"]


def test_successor_wait_ends_with_token_unavailable() -> None:
    """With no successor the wait ends at its deadline with TokenUnavailable, not a hang."""
    tokens = FakeTokens("OLD-TOKEN")
    ticks = iter([0.0, 0.0, 5.0, 5.0, 5.0])
    successors = Successors(tokens, monotonic=lambda: next(ticks))  # type: ignore[arg-type]
    with pytest.raises(TokenUnavailable, match="no successor arrived within 1 s"):
        successors.replace("wxapp1", "OLD-TOKEN", errcode=40001, timeout_s=1.0)
    assert tokens.reports == ["OLD-TOKEN"]
