"""Which credentials wxtoken keeps, and on which platform each exists.

One version sequence per (app_id, kind). An app_id names one credential owner: an official
account or mini-program (platform ``wechat``), or one WeCom app (platform ``wecom``: a
corp_id plus one agent with its own secret). So a WeCom app's ``access_token`` is that
agent's own token, never another agent's of the same corp (sharing one gives 301002).

    kind (on the wire)    ticket name    what it is
    access_token          -              the app's access token (both platforms)
    jsapi_ticket          jsapi          official account's JS-SDK ticket, for wx.config
    wx_card_ticket        wx_card        official account's card api_ticket
    corp_jsapi_ticket     corp_jsapi     WeCom corp ticket (get_jsapi_ticket), for wx.config
    agent_config_ticket   agent_config   WeCom agent ticket (type=agent_config), for
                                         wx.agentConfig

Every ticket is fetched with its app's current access token, its dependency.
"""

from __future__ import annotations

import enum


class Platform(enum.StrEnum):
    """Who issues an app's credentials."""

    WECHAT = "wechat"  # api.weixin.qq.com: official accounts, mini-programs
    WECOM = "wecom"  # qyapi.weixin.qq.com: WeCom (企业微信) apps


class TokenKind(enum.StrEnum):
    """What the value is; one version sequence per app and kind."""

    ACCESS_TOKEN = "access_token"
    JSAPI_TICKET = "jsapi_ticket"
    WX_CARD_TICKET = "wx_card_ticket"
    CORP_JSAPI_TICKET = "corp_jsapi_ticket"
    AGENT_CONFIG_TICKET = "agent_config_ticket"

    @property
    def is_ticket(self) -> bool:
        return self is not TokenKind.ACCESS_TOKEN

    @property
    def ticket_name(self) -> str | None:
        """The name the apps file and `get_ticket` use ("jsapi", ...); None for the token."""
        return self.value.removesuffix("_ticket") if self.is_ticket else None

    @property
    def platforms(self) -> frozenset[Platform]:
        """The platforms on which an app can have this kind."""
        if self is TokenKind.ACCESS_TOKEN:
            return frozenset(Platform)
        if self in (TokenKind.CORP_JSAPI_TICKET, TokenKind.AGENT_CONFIG_TICKET):
            return frozenset({Platform.WECOM})
        return frozenset({Platform.WECHAT})

    @property
    def dependency(self) -> TokenKind | None:
        """The credential this one is fetched with: a ticket needs the app's access token."""
        return TokenKind.ACCESS_TOKEN if self.is_ticket else None

    @classmethod
    def parse(cls, value: object) -> TokenKind:
        """A kind from its wire value or its ticket name; ValueError lists the choices."""
        if isinstance(value, TokenKind):
            return value
        if isinstance(value, str):
            for kind in cls:
                if value in (kind.value, kind.ticket_name):
                    return kind
        choices = ", ".join(sorted({k.value for k in cls} | set(TICKET_NAMES)))
        shown = repr(value)[:40]
        raise ValueError(f"unknown credential kind {shown}; use one of {choices}")


#: Ticket name (as in the apps file) -> kind.
TICKET_NAMES: dict[str, TokenKind] = {
    kind.ticket_name: kind for kind in TokenKind if kind.ticket_name is not None
}


def tickets_of(platform: Platform) -> frozenset[str]:
    """The ticket names an app of `platform` may ask for."""
    return frozenset(name for name, kind in TICKET_NAMES.items() if platform in kind.platforms)
