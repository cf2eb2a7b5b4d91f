"""Credential kinds: wire values stay stable, ticket names map to kinds, platforms fit."""

from __future__ import annotations

import pytest

from consumer_lib import Platform, TokenKind
from consumer_lib.wire.kinds import TICKET_NAMES, tickets_of
from tests.unit._helpers import make_update


def test_existing_wire_values_are_unchanged() -> None:
    """Updates already stored or in flight (access_token, jsapi_ticket) still decode."""
    for kind in ("access_token", "jsapi_ticket"):
        update = make_update(kind=TokenKind(kind))
        assert type(update).decode(update.encode()).kind == kind


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("jsapi", TokenKind.JSAPI_TICKET),
        ("wx_card", TokenKind.WX_CARD_TICKET),
        ("corp_jsapi", TokenKind.CORP_JSAPI_TICKET),
        ("agent_config", TokenKind.AGENT_CONFIG_TICKET),
        ("agent_config_ticket", TokenKind.AGENT_CONFIG_TICKET),
        ("access_token", TokenKind.ACCESS_TOKEN),
    ],
)
def test_parse_accepts_values_and_ticket_names(name: str, kind: TokenKind) -> None:
    """A kind is named by its wire value or its ticket name."""
    assert TokenKind.parse(name) is kind


@pytest.mark.parametrize("bad", ["", "ticket", "JSAPI", None, 3, "x" * 200])
def test_parse_refuses_anything_else(bad: object) -> None:
    """Unknown kinds raise ValueError listing the choices, the input cut short."""
    with pytest.raises(ValueError, match="use one of") as info:
        TokenKind.parse(bad)
    assert "x" * 50 not in str(info.value)


def test_platforms_and_dependencies() -> None:
    """Official accounts have jsapi and wx_card, WeCom its corp and agent tickets; every
    ticket depends on the access token."""
    assert tickets_of(Platform.WECHAT) == {"jsapi", "wx_card"}
    assert tickets_of(Platform.WECOM) == {"corp_jsapi", "agent_config"}
    assert all(kind.dependency is TokenKind.ACCESS_TOKEN for kind in TICKET_NAMES.values())
    assert TokenKind.ACCESS_TOKEN.dependency is None
