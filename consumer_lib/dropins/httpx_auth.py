"""`access_token` for WeChat calls made with httpx, from a `TokenClient`.

    httpx.get(url, auth=WeChatTokenHttpxAuth(tokens, "wx1234567890abcdef"))

As `requests_auth.WeChatTokenAuth`: the current token on every request, and on
40001/40014/42001 a report and one retry with the successor. Works with the sync client;
with the async one the (brief, rare) wait for a successor blocks the loop.
"""

from __future__ import annotations

from collections.abc import Generator

import httpx

from .successor import INVALID_TOKEN_ERRCODES, TokenRetry, errcode_of


class WeChatTokenHttpxAuth(TokenRetry, httpx.Auth):
    """Sets the token, and on a rejected one reports and retries once."""

    requires_response_body = True

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        token = self._current()
        request.url = request.url.copy_set_param("access_token", token)
        response = yield request
        errcode = errcode_of(response.content)
        if errcode not in INVALID_TOKEN_ERRCODES:
            return
        assert errcode is not None
        successor = self._successor(token, errcode)
        if successor is None:
            return
        request.url = request.url.copy_set_param("access_token", successor)
        yield request
