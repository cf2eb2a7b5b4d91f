"""WeChat's open-platform component API (or the sandbox's): one call per method.

    component_token(...)       POST /cgi-bin/component/api_component_token
    query_auth(...)            POST /cgi-bin/component/api_query_auth
    authorizer_token(...)      POST /cgi-bin/component/api_authorizer_token
    authorizer_list(...)       POST /cgi-bin/component/api_get_authorizer_list
    start_push_ticket(...)     POST /cgi-bin/component/api_start_push_ticket

Calls after the component token take it as ``?component_access_token=``; a refusal of that
token (40001/40014/42001) is an `UpstreamError` of kind TOKEN_INVALID, so the caller
refreshes the component token and retries once (as a ticket does with an access token).
Every failure is an `UpstreamError` with its kind; 61023 (the refresh token is dead) is
CONFIG, and the caller tells the registry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from consumer_lib.wire.kinds import Platform
from producer.upstream.errcodes import FailureKind
from producer.upstream.errors import FetchedToken, UpstreamClient, UpstreamError, take_credential

#: api_get_authorizer_list's page size, at most (WeChat's limit).
MAX_LIST_COUNT = 500
_REFRESH_TOKEN_MAX_CHARS = 512

_COMPONENT = "/cgi-bin/component"


@dataclass(frozen=True, slots=True)
class Authorization:
    """What api_query_auth hands out for a redeemed code."""

    authorizer_appid: str
    token: FetchedToken
    refresh_token: str

    def __repr__(self) -> str:
        return f"Authorization({self.authorizer_appid}, {self.token!r}, refresh_token=<hidden>)"


@dataclass(frozen=True, slots=True)
class ListedAuthorizer:
    """One row of api_get_authorizer_list: `refresh_token` is "" while the code was never
    redeemed."""

    authorizer_appid: str
    refresh_token: str
    auth_time_s: int | None

    def __repr__(self) -> str:
        held = "<hidden>" if self.refresh_token else "''"
        return f"ListedAuthorizer({self.authorizer_appid}, refresh_token={held})"


def _refresh_token_in(data: dict[str, Any], field: str, *, required: bool) -> str:
    value = data.get(field)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or len(value) > _REFRESH_TOKEN_MAX_CHARS:
        raise UpstreamError(f"answer lacks a usable {field}", kind=FailureKind.TRANSIENT)
    if value and (not value.isprintable() or value.strip() != value or " " in value):
        raise UpstreamError(
            f"{field} has whitespace or control characters", kind=FailureKind.TRANSIENT
        )
    if required and not value:
        raise UpstreamError(f"answer has an empty {field}", kind=FailureKind.TRANSIENT)
    return value


def _appid_in(data: dict[str, Any], field: str) -> str:
    value = data.get(field)
    if not isinstance(value, str) or not value.isascii() or not 1 <= len(value) <= 64:
        raise UpstreamError(f"answer lacks a usable {field}", kind=FailureKind.TRANSIENT)
    if not value.replace("_", "").replace("-", "").isalnum():
        raise UpstreamError(f"answer's {field} is not an appid", kind=FailureKind.TRANSIENT)
    return value


class OpenPlatformClient(UpstreamClient):
    """The component API of WeChat's open platform."""

    platform = Platform.WECHAT

    def _with_token(
        self, call: str, component_token: str, payload: dict[str, object]
    ) -> dict[str, Any]:
        return self._post(
            f"{_COMPONENT}/{call}",
            payload,
            params={"component_access_token": component_token},
            uses_token=True,
        )

    def component_token(
        self, component_appid: str, secret: str, verify_ticket: str
    ) -> FetchedToken:
        """A new component token (the previous one dies about five minutes later)."""
        payload: dict[str, object] = {
            "component_appid": component_appid,
            "component_appsecret": secret,
            "component_verify_ticket": verify_ticket,
        }
        data = self._post(f"{_COMPONENT}/api_component_token", payload)
        return take_credential(data, "component_access_token")

    def query_auth(self, component_token: str, component_appid: str, code: str) -> Authorization:
        """Redeem an authorization code: the authorizer's first token and refresh token."""
        payload: dict[str, object] = {
            "component_appid": component_appid,
            "authorization_code": code,
        }
        data = self._with_token("api_query_auth", component_token, payload)
        info = data.get("authorization_info")
        if not isinstance(info, dict):
            raise UpstreamError("answer lacks authorization_info", kind=FailureKind.TRANSIENT)
        return Authorization(
            authorizer_appid=_appid_in(info, "authorizer_appid"),
            token=take_credential(info, "authorizer_access_token"),
            refresh_token=_refresh_token_in(info, "authorizer_refresh_token", required=True),
        )

    def authorizer_token(
        self, component_token: str, component_appid: str, authorizer_appid: str, refresh_token: str
    ) -> tuple[FetchedToken, str]:
        """A new authorizer access token, and the refresh token the answer carries ("" when
        it carries none: keep the one held)."""
        payload: dict[str, object] = {
            "component_appid": component_appid,
            "authorizer_appid": authorizer_appid,
            "authorizer_refresh_token": refresh_token,
        }
        data = self._with_token("api_authorizer_token", component_token, payload)
        token = take_credential(data, "authorizer_access_token")
        return token, _refresh_token_in(data, "authorizer_refresh_token", required=False)

    def authorizer_list(
        self,
        component_token: str,
        component_appid: str,
        *,
        offset: int,
        count: int = MAX_LIST_COUNT,
    ) -> tuple[int, list[ListedAuthorizer]]:
        """One page of the platform's authorizers: (total count, the page)."""
        if offset < 0 or not 1 <= count <= MAX_LIST_COUNT:
            raise ValueError(f"offset >= 0 and 1 <= count <= {MAX_LIST_COUNT}")
        payload: dict[str, object] = {
            "component_appid": component_appid,
            "offset": offset,
            "count": count,
        }
        data = self._with_token("api_get_authorizer_list", component_token, payload)
        total, rows = data.get("total_count"), data.get("list")
        if isinstance(total, bool) or not isinstance(total, int) or total < 0:
            raise UpstreamError("answer lacks a usable total_count", kind=FailureKind.TRANSIENT)
        if not isinstance(rows, list) or len(rows) > count:
            raise UpstreamError("answer lacks a usable list", kind=FailureKind.TRANSIENT)
        page: list[ListedAuthorizer] = []
        for row in rows:
            if not isinstance(row, dict):
                raise UpstreamError("a list row is not an object", kind=FailureKind.TRANSIENT)
            auth_time = row.get("auth_time")
            page.append(
                ListedAuthorizer(
                    authorizer_appid=_appid_in(row, "authorizer_appid"),
                    refresh_token=_refresh_token_in(row, "refresh_token", required=False),
                    auth_time_s=auth_time
                    if isinstance(auth_time, int) and not isinstance(auth_time, bool)
                    else None,
                )
            )
        return total, page

    def start_push_ticket(self, component_appid: str, secret: str) -> None:
        """Ask WeChat to push the verify ticket again (after 61005/61006, or pushes that
        stopped)."""
        payload: dict[str, object] = {
            "component_appid": component_appid,
            "component_secret": secret,
        }
        self._post(f"{_COMPONENT}/api_start_push_ticket", payload)
