"""JS-SDK and card signatures: WeChat's published vector, and the mistakes they rule out."""

from __future__ import annotations

import hashlib

import pytest

from consumer_lib import TokenUnavailable
from consumer_lib.jssdk import (
    agent_config,
    card_ext,
    card_signature,
    jssdk_config,
    jssdk_signature,
    new_nonce,
    page_url,
    wecom_config,
)

# WeChat's own example (JS-SDK docs, appendix 1).
TICKET = "sM4AOVdWfPE4DxkXGEs8VMCPGGVi4C3VM0P37wVUCFvkVAy_90u5h9nbSlYy3-Sl-HhTdfl2fzFy1AOcHKP7qg"
NONCE = "Wm3WZYTPz0wzccnW"
TIMESTAMP = 1414587457
URL = "http://mp.weixin.qq.com?params=value"
SIGNATURE = "0f9de62fce790f9a083d5c99e95740ceb90c27ed"


class FakeTickets:
    """A ticket source serving fixed tickets and recording what was asked."""

    def __init__(self, tickets: dict[tuple[str, str], str]) -> None:
        self.tickets, self.asked = tickets, list[tuple[str, str]]()

    def get_ticket(self, app_id: str, ticket: str, timeout: float = 5.0) -> str:
        self.asked.append((app_id, ticket))
        if (app_id, ticket) not in self.tickets:
            raise TokenUnavailable(f"no {ticket} for {app_id}")
        return self.tickets[(app_id, ticket)]


def test_wechat_published_vector() -> None:
    """The signature of WeChat's documented example is the documented one."""
    assert jssdk_signature(TICKET, NONCE, TIMESTAMP, URL) == SIGNATURE


def test_fragment_is_not_signed() -> None:
    """The URL is signed up to its '#': a SPA route after '#' does not change it."""
    assert jssdk_signature(TICKET, NONCE, TIMESTAMP, URL + "#/route?x=1") == SIGNATURE


def test_jssdk_config_uses_the_signed_nonce_and_timestamp() -> None:
    """jssdk_config returns the nonce and timestamp it signed, with the app's jsapi ticket."""
    source = FakeTickets({("wxapp1", "jsapi"): TICKET})
    config = jssdk_config(source, "wxapp1", URL, clock=lambda: TIMESTAMP + 0.9, nonce=NONCE)
    assert config == {
        "appId": "wxapp1",
        "timestamp": TIMESTAMP,
        "nonceStr": NONCE,
        "signature": SIGNATURE,
    }
    assert source.asked == [("wxapp1", "jsapi")]


def test_jssdk_config_fresh_nonce_each_call() -> None:
    """Without a given nonce every config gets its own random one, and a matching signature."""
    source = FakeTickets({("wxapp1", "jsapi"): TICKET})
    first = jssdk_config(source, "wxapp1", URL, clock=lambda: TIMESTAMP)
    second = jssdk_config(source, "wxapp1", URL, clock=lambda: TIMESTAMP)
    assert first["nonceStr"] != second["nonceStr"]
    nonce = first["nonceStr"]
    assert isinstance(nonce, str)
    assert first["signature"] == jssdk_signature(TICKET, nonce, TIMESTAMP, URL)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("", "1-4096"),
        ("/relative/page", "absolute"),
        ("ftp://example.com/x", "absolute"),
        ("https:///nohost", "absolute"),
        ("https://example.com/a b", "whitespace"),
        ("https://example.com/\x00", "whitespace or control"),
        ("https://example.com/" + "a" * 5000, "1-4096"),
    ],
)
def test_bad_page_urls_are_refused_before_any_ticket_wait(url: str, message: str) -> None:
    """A URL WeChat would never accept raises ValueError, without asking for a ticket."""
    source = FakeTickets({("wxapp1", "jsapi"): TICKET})
    with pytest.raises(ValueError, match=message):
        jssdk_config(source, "wxapp1", url)
    assert source.asked == []


def test_page_url_keeps_raw_query() -> None:
    """The query is signed raw, not re-encoded."""
    assert page_url("https://h5.example.com/p?a=1&b=%E4%B8%AD#top") == (
        "https://h5.example.com/p?a=1&b=%E4%B8%AD"
    )


@pytest.mark.parametrize(
    ("nonce", "timestamp"),
    [("", 1), ("has space", 1), ("x" * 33, 1), ("ok", 0), ("ok", -5), ("ok", True)],
)
def test_bad_nonce_or_timestamp_is_refused(nonce: str, timestamp: int) -> None:
    """A nonce WeChat refuses, or a non-positive timestamp, raises ValueError."""
    with pytest.raises(ValueError, match=r"nonceStr|timestamp"):
        jssdk_signature(TICKET, nonce, timestamp, URL)


def test_missing_ticket_raises_token_unavailable() -> None:
    """No ticket held: the client's TokenUnavailable reaches the caller unchanged."""
    with pytest.raises(TokenUnavailable):
        jssdk_config(FakeTickets({}), "wxapp1", URL)


def test_wecom_config_and_agent_config_use_their_own_tickets() -> None:
    """WeCom's wx.config signs with the corp ticket, wx.agentConfig with the agent ticket."""
    source = FakeTickets({("hr", "corp_jsapi"): "CORP-T", ("hr", "agent_config"): "AGENT-T"})
    corp = wecom_config(source, "hr", URL, corp_id="ww_corp", clock=lambda: TIMESTAMP, nonce="n1")
    agent = agent_config(
        source, "hr", URL, corp_id="ww_corp", agent_id=1000002, clock=lambda: TIMESTAMP, nonce="n1"
    )
    assert corp["appId"] == "ww_corp"
    assert corp["signature"] == jssdk_signature("CORP-T", "n1", TIMESTAMP, URL)
    assert (agent["corpid"], agent["agentid"]) == ("ww_corp", "1000002")
    assert agent["signature"] == jssdk_signature("AGENT-T", "n1", TIMESTAMP, URL)
    assert corp["signature"] != agent["signature"]


def test_card_signature_sorts_values() -> None:
    """The card signature is sha1 of the sorted values, whatever order they are given in."""
    values = ["API-TICKET", "1414587457", "pFS7Fjg8kV1I", "12345", "o_user", "nonce1"]
    expected = hashlib.sha1("".join(sorted(values)).encode(), usedforsecurity=False).hexdigest()
    signed = card_signature(
        "API-TICKET", 1414587457, "nonce1", card_id="pFS7Fjg8kV1I", code="12345", openid="o_user"
    )
    assert signed == expected


def test_card_ext_names_only_given_fields() -> None:
    """cardExt carries code/openid only when given, signed with the wx_card ticket."""
    source = FakeTickets({("wxapp1", "wx_card"): "CARD-T"})
    ext = card_ext(source, "wxapp1", "pCARD", clock=lambda: TIMESTAMP, nonce="n2")
    assert ext == {
        "timestamp": str(TIMESTAMP),
        "nonce_str": "n2",
        "signature": card_signature("CARD-T", TIMESTAMP, "n2", card_id="pCARD"),
    }
    with pytest.raises(ValueError, match="card_id"):
        card_signature("CARD-T", TIMESTAMP, "n2", card_id="")


def test_new_nonce_is_alphanumeric() -> None:
    """Nonces are letters and digits of the asked length; absurd lengths are refused."""
    assert new_nonce(32).isalnum()
    assert len(new_nonce()) == 16
    with pytest.raises(ValueError, match="1-32"):
        new_nonce(33)
