"""`Upstream`: the one object the refresher talks to for every credential of every app.

It picks the platform's client by the app (`WeChatClient` for official accounts,
`WecomClient` for WeCom apps) so callers never route by hand:

    upstream.fetch(app)                                  # the app's access token
    upstream.fetch_ticket(app, TokenKind.JSAPI_TICKET, access_token)
    upstream.check_token(app, access_token)              # TokenCheck.ACCEPTED / REFUSED
    upstream.clear_quota(app)                            # official accounts only
"""

from __future__ import annotations

from consumer_lib.wire.kinds import Platform, TokenKind
from producer.app_config import AppConfig
from producer.settings import ProducerSettings
from producer.upstream.errors import FetchedToken, UpstreamError
from producer.upstream.wechat import TokenCheck, WeChatClient, pooled_session
from producer.upstream.wecom import WecomClient

__all__ = ["FetchedToken", "TokenCheck", "Upstream", "UpstreamError"]


class Upstream:
    """Both platforms' clients behind one interface; satisfies the refresher's `Fetcher`."""

    def __init__(self, wechat: WeChatClient, wecom: WecomClient) -> None:
        self.wechat, self.wecom = wechat, wecom

    @classmethod
    def from_settings(cls, settings: ProducerSettings) -> Upstream:
        """Both clients, each with an HTTP pool of `upstream_concurrency` connections (one
        per worker that may call at once)."""
        connect_s, read_s = settings.http_connect_timeout_s, settings.http_read_timeout_s
        pool_size = settings.upstream_concurrency
        return cls(
            WeChatClient(
                settings.wechat_base_url,
                session=pooled_session(pool_size),
                connect_timeout_s=connect_s,
                read_timeout_s=read_s,
            ),
            WecomClient(
                settings.wecom_base_url,
                session=pooled_session(pool_size),
                connect_timeout_s=connect_s,
                read_timeout_s=read_s,
            ),
        )

    def close(self) -> None:
        """Close both clients' HTTP pools."""
        self.wechat.close()
        self.wecom.close()

    def client_for(self, app: AppConfig) -> WeChatClient | WecomClient:
        return self.wecom if app.platform is Platform.WECOM else self.wechat

    def fetch(self, app: AppConfig, *, force_refresh: bool = False) -> FetchedToken:
        """The app's access token from its platform."""
        return self.client_for(app).fetch(app, force_refresh=force_refresh)

    def fetch_ticket(self, app: AppConfig, kind: TokenKind, access_token: str) -> FetchedToken:
        """Ticket `kind` of `app`, fetched with the app's current `access_token`."""
        if kind not in app.tickets:
            raise ValueError(f"{app.app_id} does not keep a {kind}")
        return self.client_for(app).fetch_ticket(kind, access_token)

    def check_token(self, app: AppConfig, access_token: str) -> TokenCheck:
        return self.client_for(app).check_token(access_token)

    def clear_quota(self, app: AppConfig) -> None:
        if app.platform is Platform.WECOM:
            raise ValueError(f"{app.app_id}: WeCom has no clear_quota")
        self.wechat.clear_quota(app)
