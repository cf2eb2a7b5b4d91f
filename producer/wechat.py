"""Fetching access tokens from WeChat (or the sandbox), and judging its answers.

requests' exceptions stop here and become `UpstreamError`. Their text is not passed on:
for the classic API it contains the URL, and so the app secret.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from consumer_lib.errors import WxTokenError
from consumer_lib.wire.update import MAX_LIFETIME_S, MAX_TOKEN_CHARS

from .apps import AppConfig, TokenApi
from .errcodes import FailureKind, describe

log = logging.getLogger(__name__)


class UpstreamError(WxTokenError):
    """WeChat did not give us a usable token; `kind` says how to back off."""

    def __init__(self, message: str, *, kind: FailureKind, errcode: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.errcode = errcode


@dataclass(frozen=True)
class FetchedToken:
    """A token as WeChat handed it out; `expires_in_s` counts from the request's start."""

    value: str
    expires_in_s: int

    def __repr__(self) -> str:
        return f"FetchedToken(value=<{len(self.value)} chars>, expires_in_s={self.expires_in_s})"


def pooled_session(pool_size: int) -> requests.Session:
    """A session whose connection pool fits `pool_size` concurrent callers (requests keeps
    10 per host by default, and logs "Connection pool is full" beyond that)."""
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool_size)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


class WeChatClient:
    """`fetch(app)` calls the app's token API once and returns the token or raises."""

    def __init__(
        self,
        base_url: str,
        *,
        session: requests.Session | None = None,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 10.0,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._session = session or requests.Session()
        self._timeout = (connect_timeout_s, read_timeout_s)

    def fetch(self, app: AppConfig, *, force_refresh: bool = False) -> FetchedToken:
        """One upstream call; every failure is an `UpstreamError` with its kind."""
        response: requests.Response | None = None
        failure = "no answer"
        try:
            response = self._send(app, force_refresh=force_refresh)
        except requests.Timeout:
            failure = "timed out"
        except requests.RequestException as exc:
            # The exception's text may contain the URL with the secret: keep only its type.
            failure = f"request failed ({exc.__class__.__name__})"
        if response is None:
            # Raised outside the handler, so no __context__ keeps the URL (and secret) alive.
            raise UpstreamError(failure, kind=FailureKind.TRANSIENT)
        return parse_token_answer(response.status_code, response.content)

    def _send(self, app: AppConfig, *, force_refresh: bool) -> requests.Response:
        if app.token_api is TokenApi.STABLE:
            return self._session.post(
                f"{self._base_url}/cgi-bin/stable_token",
                json={
                    "grant_type": "client_credential",
                    "appid": app.app_id,
                    "secret": app.secret.get_secret_value(),
                    "force_refresh": force_refresh,
                },
                timeout=self._timeout,
            )
        return self._session.get(
            f"{self._base_url}/cgi-bin/token",
            params={
                "grant_type": "client_credential",
                "appid": app.app_id,
                "secret": app.secret.get_secret_value(),
            },
            timeout=self._timeout,
        )


def parse_token_answer(status_code: int, body: bytes) -> FetchedToken:
    """Judge one HTTP answer of a token API: a token, or the reason it is not one."""
    if status_code != 200:
        raise UpstreamError(f"HTTP {status_code}", kind=FailureKind.TRANSIENT)
    try:
        data: Any = json.loads(body)
    except (ValueError, RecursionError):
        raise UpstreamError(
            f"unparsable answer ({len(body)} bytes, not JSON)", kind=FailureKind.TRANSIENT
        ) from None
    if not isinstance(data, dict):
        raise UpstreamError("answer is not a JSON object", kind=FailureKind.TRANSIENT)
    errcode = data.get("errcode", 0)
    if errcode not in (0, None):
        if isinstance(errcode, bool) or not isinstance(errcode, int):
            raise UpstreamError("answer has a non-integer errcode", kind=FailureKind.TRANSIENT)
        meaning = describe(errcode)
        # One line whatever upstream sends: the message ends up in a log line.
        errmsg = " ".join(str(data.get("errmsg", "")).split())[:120]
        raise UpstreamError(
            f"errcode {errcode} ({meaning.meaning}): {errmsg}", kind=meaning.kind, errcode=errcode
        )
    value = data.get("access_token")
    if not isinstance(value, str) or not value or len(value) > MAX_TOKEN_CHARS:
        raise UpstreamError("answer lacks a usable access_token", kind=FailureKind.TRANSIENT)
    if not value.isprintable() or value.strip() != value or " " in value:
        raise UpstreamError(
            "access_token has whitespace or control characters", kind=FailureKind.TRANSIENT
        )
    expires_in = data.get("expires_in")
    if (
        isinstance(expires_in, bool)
        or not isinstance(expires_in, int | float)
        or not math.isfinite(expires_in)
        or not 1 <= expires_in <= MAX_LIFETIME_S
    ):
        raise UpstreamError("answer lacks a sensible expires_in", kind=FailureKind.TRANSIENT)
    return FetchedToken(value=value, expires_in_s=int(expires_in))
