"""WeCom's APIs (qyapi.weixin.qq.com, or the sandbox's): an agent's token, its corp and
agent tickets, the token check. One token per agent: `fetch` sends the corp id with *that
agent's* secret, so two agents of a corp never share a token (WeCom's 301002).

WeCom's gettoken answers the *same* token while it is valid, with a shrinking
``expires_in``: the caller must recognise an unchanged token (see `renewal`).
"""

from __future__ import annotations

import logging

from consumer_lib.wire.kinds import Platform, TokenKind
from producer.app_config import AppConfig
from producer.upstream.errcodes import FailureKind
from producer.upstream.errors import FetchedToken, UpstreamClient, UpstreamError, take_credential

log = logging.getLogger(__name__)

#: WeCom's ticket kinds: the path, and its query besides the token.
WECOM_TICKET_CALLS: dict[TokenKind, tuple[str, dict[str, str]]] = {
    TokenKind.CORP_JSAPI_TICKET: ("/cgi-bin/get_jsapi_ticket", {}),
    TokenKind.AGENT_CONFIG_TICKET: ("/cgi-bin/ticket/get", {"type": "agent_config"}),
}


class WecomClient(UpstreamClient):
    """One upstream call per method; every failure is an `UpstreamError` with its kind."""

    platform = Platform.WECOM

    def fetch(self, app: AppConfig, *, force_refresh: bool = False) -> FetchedToken:
        """The agent's access token. WeCom has no forced refresh: `force_refresh` is
        accepted for the refresher's sake and changes nothing."""
        if app.platform is not Platform.WECOM or app.corp_id is None:
            raise UpstreamError(f"{app.app_id} is not a WeCom app", kind=FailureKind.CONFIG)
        params = {"corpid": app.corp_id, "corpsecret": app.secret.get_secret_value()}
        return take_credential(
            self._get("/cgi-bin/gettoken", params, uses_token=False), "access_token"
        )

    def fetch_ticket(self, kind: TokenKind, access_token: str) -> FetchedToken:
        """The corp or agent ticket, fetched with the agent's `access_token`; a refusal
        because of the token is an `UpstreamError` of kind TOKEN_INVALID."""
        found = WECOM_TICKET_CALLS.get(kind)
        if found is None:
            raise ValueError(f"{kind} is not a WeCom ticket")
        path, extra = found
        data = self._get(path, {"access_token": access_token, **extra}, uses_token=True)
        return take_credential(data, "ticket")
