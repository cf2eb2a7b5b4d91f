"""What a refresher needs from outside: an upstream to fetch from, and a gate that says
whether this producer may fetch now (the lease) and fences its writes."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from producer.apps import AppConfig, TokenApi
from producer.upstream.wechat import FetchedToken, TokenCheck


class Fetcher(Protocol):
    """What the refresher needs from upstream (`WeChatClient` is one)."""

    def fetch(self, app: AppConfig, *, force_refresh: bool = False) -> FetchedToken: ...


class AuthorizerTokens(Protocol):
    """Fetches a platform authorizer's token with the platform's component token
    (`producer.platform.tokens.PlatformTokens` is one)."""

    def authorizer_token(self, app: AppConfig, component_token: str) -> FetchedToken: ...


@runtime_checkable
class TokenProber(Protocol):
    """Asks upstream whether an access token works (`Upstream.check_token` is one):
    ACCEPTED or REFUSED; any other answer raises `UpstreamError`."""

    def check_token(self, app: AppConfig, access_token: str) -> TokenCheck: ...


class Gate(Protocol):
    """Whether this producer may fetch now (`Leadership` is one), and its write fence."""

    @property
    def fence_owner(self) -> str | None: ...

    @property
    def epoch(self) -> int | None: ...

    def may_fetch(self, token_api: TokenApi) -> bool: ...

    def may_fetch_now(
        self, token_api: TokenApi, *, need_s: float, force_refresh: bool = False
    ) -> bool: ...

    def fenced(self) -> None: ...


class SoleProducer:
    """The gate of a producer that needs no lease: always fetches, writes unfenced."""

    fence_owner: str | None = None
    epoch: int | None = None

    def may_fetch(self, token_api: TokenApi) -> bool:
        return True

    def may_fetch_now(
        self, token_api: TokenApi, *, need_s: float, force_refresh: bool = False
    ) -> bool:
        return True

    def fenced(self) -> None:
        """Nothing to step down from."""
