"""WeChat's official-account APIs (or the sandbox's): tokens, tickets, the token check,
clear_quota. Each method makes one call and judges the answer strictly (`upstream`)."""

from __future__ import annotations

import logging

import requests
from requests.adapters import HTTPAdapter

from consumer_lib.wire.kinds import Platform, TokenKind
from producer.app_config import AppConfig, TokenApi
from producer.upstream.errcodes import FailureKind
from producer.upstream.errors import (
    FetchedToken as FetchedToken,  # re-exported: the refresher's import
)
from producer.upstream.errors import TokenCheck as TokenCheck  # re-exported: fetching's import
from producer.upstream.errors import UpstreamClient, judge, take_credential
from producer.upstream.errors import UpstreamError as UpstreamError

log = logging.getLogger(__name__)

#: The ticket kinds of an official account, by the `type` getticket takes.
WECHAT_TICKET_TYPES: dict[TokenKind, str] = {
    TokenKind.JSAPI_TICKET: "jsapi",
    TokenKind.WX_CARD_TICKET: "wx_card",
}


def pooled_session(pool_size: int) -> requests.Session:
    """A session whose connection pool fits `pool_size` concurrent callers (requests keeps
    10 per host by default, and logs "Connection pool is full" beyond that)."""
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool_size)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


class WeChatClient(UpstreamClient):
    """One upstream call per method; every failure is an `UpstreamError` with its kind."""

    platform = Platform.WECHAT

    def fetch(self, app: AppConfig, *, force_refresh: bool = False) -> FetchedToken:
        """The app's access token (stable_token, or token for classic apps)."""
        if app.platform is not Platform.WECHAT:
            raise UpstreamError(f"{app.app_id} is a {app.platform} app", kind=FailureKind.CONFIG)
        secret = app.secret.get_secret_value()
        if app.token_api is TokenApi.STABLE:
            payload: dict[str, object] = {
                "grant_type": "client_credential",
                "appid": app.app_id,
                "secret": secret,
                "force_refresh": force_refresh,
            }
            data = self._post("/cgi-bin/stable_token", payload)
        else:
            params = {"grant_type": "client_credential", "appid": app.app_id, "secret": secret}
            data = self._get("/cgi-bin/token", params, uses_token=False)
        return take_credential(data, "access_token")

    def fetch_ticket(self, kind: TokenKind, access_token: str) -> FetchedToken:
        """A jsapi or wx_card ticket, fetched with `access_token`. A refusal because of
        the token is an `UpstreamError` of kind TOKEN_INVALID: refresh it, then retry."""
        ticket_type = WECHAT_TICKET_TYPES.get(kind)
        if ticket_type is None:
            raise ValueError(f"{kind} is not an official account's ticket")
        params = {"access_token": access_token, "type": ticket_type}
        data = self._get("/cgi-bin/ticket/getticket", params, uses_token=True)
        return take_credential(data, "ticket")

    def clear_quota(self, app: AppConfig) -> None:
        """POST clear_quota/v2 with the app id and secret (works when no token can be had;
        10 a month, 48006 after that)."""
        if app.platform is not Platform.WECHAT:
            raise UpstreamError(
                f"{app.app_id}: clear_quota is for official accounts", kind=FailureKind.CONFIG
            )
        payload: dict[str, object] = {
            "appid": app.app_id,
            "appsecret": app.secret.get_secret_value(),
        }
        self._post("/cgi-bin/clear_quota/v2", payload)


def parse_token_answer(status_code: int, body: bytes) -> FetchedToken:
    """Judge one HTTP answer of WeChat's token APIs: a token, or the reason it is not one."""
    data = judge(status_code, body, platform=Platform.WECHAT, uses_token=False)
    return take_credential(data, "access_token")
