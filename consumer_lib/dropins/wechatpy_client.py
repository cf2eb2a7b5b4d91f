"""`TokenWeChatClient`: wechatpy's `WeChatClient` with its token from a `TokenClient`.

    from consumer_lib import TokenClient
    from consumer_lib.dropins.wechatpy_client import TokenWeChatClient

    tokens = TokenClient.from_env().start()
    client = TokenWeChatClient("wx1234567890abcdef", tokens)
    client.user.get("openid")  # every wechatpy API, unchanged

The client holds no secret and never fetches a token: `access_token` is `get_token()`, and
on 40001/40014/42001 it reports the rejected token and retries once with the successor the
producer pushes (instead of wechatpy's own fetch, which would invalidate everyone else's).
Needs the `wxtoken[wechatpy]` extra.
"""

from __future__ import annotations

import threading
from typing import Any

from wechatpy import WeChatClient
from wechatpy.exceptions import WeChatClientException

from .._client.client import TokenClient
from ..errors import TokenUnavailable, WxTokenError
from .successor import DEFAULT_SUCCESSOR_TIMEOUT_S, INVALID_TOKEN_ERRCODES, Successors


class TokenWeChatClient(WeChatClient):  # type: ignore[misc]  # wechatpy ships no types
    def __init__(
        self,
        appid: str,
        tokens: TokenClient,
        *,
        timeout: float | None = None,
        token_timeout_s: float = 5.0,
        successor_timeout_s: float = DEFAULT_SUCCESSOR_TIMEOUT_S,
        api_base_url: str | None = None,
        successors: Successors | None = None,
    ) -> None:
        super().__init__(appid, None, timeout=timeout, auto_retry=True)
        self._successors = successors or Successors(tokens)
        self._tokens = tokens
        self._token_timeout_s = token_timeout_s
        self._successor_timeout_s = successor_timeout_s
        self._retrying = threading.local()
        if api_base_url is not None:
            self.API_BASE_URL = api_base_url

    @property
    def access_token(self) -> str:
        return self._tokens.get_token(self.appid, timeout=self._token_timeout_s)

    def fetch_access_token(self) -> Any:
        """Never: tokens come from the producer. Reaching this is a bug."""
        raise WxTokenError("TokenWeChatClient never fetches a token itself")

    def _handle_result(
        self,
        res: Any,
        method: str | None = None,
        url: str | None = None,
        result_processor: Any = None,
        **kwargs: Any,
    ) -> Any:
        result = res if isinstance(res, dict) else self._decode_result(res)
        errcode = result.get("errcode") if isinstance(result, dict) else None
        try:
            errcode = int(errcode) if errcode is not None else None
        except (TypeError, ValueError):
            errcode = None
        if errcode not in INVALID_TOKEN_ERRCODES:
            return super()._handle_result(res, method, url, result_processor, **kwargs)
        params = kwargs.get("params")
        rejected = params.get("access_token") if isinstance(params, dict) else None
        if getattr(self._retrying, "active", False) or not isinstance(rejected, str):
            raise WeChatClientException(
                errcode, result.get("errmsg", errcode), client=self, request=None, response=res
            )
        try:
            successor = self._successors.replace(
                self.appid, rejected, errcode=errcode, timeout_s=self._successor_timeout_s
            )
        except TokenUnavailable:
            raise WeChatClientException(
                errcode, result.get("errmsg", errcode), client=self, request=None, response=res
            ) from None
        assert isinstance(params, dict)
        params["access_token"] = successor
        self._retrying.active = True
        try:
            return self._request(
                method=method, url_or_endpoint=url, result_processor=result_processor, **kwargs
            )
        finally:
            self._retrying.active = False
