"""`AppConfig`: one app the producer keeps credentials for, and the credentials it needs.

An app is an official account / mini-program (``platform = "wechat"``: its token from
stable_token or token, optional ``jsapi`` and ``wx_card`` tickets), or one WeCom app
(``platform = "wecom"``: a ``corp_id`` plus an ``agent_id`` with that agent's own secret,
its token from gettoken, optional ``corp_jsapi`` and ``agent_config`` tickets).

A third-party platform adds two more, made from the platforms file and the registry, never
written in the apps file (`producer.platform.roster`): the platform's component token
(``token_api = "component"``, app id = the component appid, secret = the component secret)
and each authorizer's token (``token_api = "authorizer"``, app id
``{component_appid}.{authorizer_appid}``, no secret: its refresh token is in the registry),
with optional ``jsapi`` and ``wx_card`` tickets like any official account's.
"""

from __future__ import annotations

import enum
from typing import Annotated, NamedTuple, Self

from pydantic import BaseModel, ConfigDict, SecretStr, StringConstraints, model_validator

from consumer_lib.wire.authorizers import authorizer_app_id
from consumer_lib.wire.kinds import Platform, TokenKind, tickets_of
from consumer_lib.wire.update import AppId

CorpId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
AgentId = Annotated[str, StringConstraints(pattern=r"^[0-9]{1,12}$")]


class TokenApi(enum.StrEnum):
    """Which upstream endpoint hands out the app's token."""

    STABLE = "stable"  # WeChat: POST /cgi-bin/stable_token, normal mode
    CLASSIC = "classic"  # WeChat: GET /cgi-bin/token
    WECOM = "wecom"  # WeCom: GET /cgi-bin/gettoken (the same token until it expires)
    COMPONENT = "component"  # open platform: POST /cgi-bin/component/api_component_token
    AUTHORIZER = "authorizer"  # open platform: POST .../api_authorizer_token


class Credential(NamedTuple):
    """One credential of an app, and the one it is fetched with (None: the app's secret)."""

    kind: TokenKind
    depends_on: TokenKind | None


class AppConfig(BaseModel):
    """One app the producer keeps credentials for."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    app_id: AppId
    secret: SecretStr
    token_api: TokenApi = TokenApi.STABLE
    platform: Platform = Platform.WECHAT
    corp_id: CorpId | None = None
    agent_id: AgentId | None = None
    #: The tickets kept besides the access token, in the order the file names them.
    tickets: tuple[TokenKind, ...] = ()
    #: A component token's or an authorizer's platform; and the authorizer's own appid.
    component_appid: str | None = None
    authorizer_appid: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        wecom = self.platform is Platform.WECOM
        if wecom != (self.token_api is TokenApi.WECOM):
            raise ValueError("a WeCom app's token_api is 'wecom', and only a WeCom app's")
        if wecom and (self.corp_id is None or self.agent_id is None):
            raise ValueError("a WeCom app needs corp_id and agent_id")
        if not wecom and (self.corp_id is not None or self.agent_id is not None):
            raise ValueError("corp_id and agent_id are for platform 'wecom' only")
        self._check_platform_fields()
        allowed = tickets_of(self.platform)
        for kind in self.tickets:
            if kind.ticket_name not in allowed:
                raise ValueError(
                    f"{kind} is not a ticket of platform {self.platform}; "
                    f"use some of {sorted(allowed)}"
                )
        if len(set(self.tickets)) != len(self.tickets):
            raise ValueError("a ticket is listed twice")
        return self

    def _check_platform_fields(self) -> None:
        api = self.token_api
        if api is TokenApi.COMPONENT:
            if self.component_appid != self.app_id or self.authorizer_appid is not None:
                raise ValueError("a component token's app_id is its component_appid")
            if self.tickets:
                raise ValueError("a component token has no tickets")
        elif api is TokenApi.AUTHORIZER:
            if self.component_appid is None or self.authorizer_appid is None:
                raise ValueError("an authorizer needs component_appid and authorizer_appid")
            if self.app_id != authorizer_app_id(self.component_appid, self.authorizer_appid):
                raise ValueError("an authorizer's app_id is {component_appid}.{authorizer_appid}")
        elif self.component_appid is not None or self.authorizer_appid is not None:
            raise ValueError("component_appid and authorizer_appid are for platform credentials")

    @property
    def is_platform_credential(self) -> bool:
        """Made from the platforms file and the registry, not from the apps file."""
        return self.token_api in (TokenApi.COMPONENT, TokenApi.AUTHORIZER)

    @property
    def credentials(self) -> tuple[Credential, ...]:
        """Every credential to keep fresh, dependencies first: the access token, then the
        tickets fetched with it."""
        tickets = (Credential(kind, kind.dependency) for kind in self.tickets)
        return (Credential(TokenKind.ACCESS_TOKEN, None), *tickets)

    @property
    def wecom_agent(self) -> str | None:
        """``corp_id/agent_id`` for a WeCom app, for logs and checks."""
        return None if self.corp_id is None else f"{self.corp_id}/{self.agent_id}"
