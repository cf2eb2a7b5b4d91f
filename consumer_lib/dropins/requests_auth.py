"""`access_token` for WeChat calls made with requests, from a `TokenClient`.

    session.get(url, auth=WeChatTokenAuth(tokens, "wx1234567890abcdef"))

Each request gets `?access_token=` set to the current token. When WeChat answers
40001/40014/42001 the token is reported (`report_invalid`) and the request is sent once
more with the successor the producer pushes; a second rejection is returned as it came.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import requests
from requests.auth import AuthBase

from .successor import INVALID_TOKEN_ERRCODES, TokenRetry, errcode_of


def with_token(url: str, token: str) -> str:
    """`url` with its `access_token` query parameter set to `token` (others kept)."""
    parts = urlsplit(url)
    query = [
        (k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "access_token"
    ]
    query.append(("access_token", token))
    return urlunsplit(parts._replace(query=urlencode(query)))


class WeChatTokenAuth(TokenRetry, AuthBase):
    """A requests auth: sets the token, and on a rejected one reports and retries once."""

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        token = self._current()
        request.prepare_url(with_token(str(request.url), token), None)
        request.register_hook("response", self._on_response)  # type: ignore[no-untyped-call]
        return request

    def _on_response(self, response: requests.Response, **kwargs: Any) -> requests.Response:
        errcode = errcode_of(response.content)
        if errcode not in INVALID_TOKEN_ERRCODES or getattr(response.request, "_wx_retried", False):
            return response
        assert errcode is not None
        rejected = dict(parse_qsl(urlsplit(str(response.request.url)).query)).get("access_token")
        successor = self._successor(rejected or "", errcode)
        if successor is None:
            return response
        retry = response.request.copy()
        retry.prepare_url(with_token(str(retry.url), successor), None)
        retry._wx_retried = True  # type: ignore[attr-defined]
        response.close()
        again = response.connection.send(retry, **kwargs)
        again.history.append(response)
        again.request = retry
        return again
