"""What WeChat's and WeCom's errcodes mean, and how hard to back off after each.

The same code can mean different things by call: WeChat's 40001 on a token fetch is a
wrong secret, on a call made *with* a token (getticket, getcallbackip) it is that token
being dead. `classify` takes both the platform and whether the call used a token.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from consumer_lib.wire.kinds import Platform


class FailureKind(enum.StrEnum):
    """How the refresher reacts to a failed fetch."""

    #: Busy, timeouts, 5xx, garbage: retry soon with capped, jittered backoff.
    TRANSIENT = "transient"
    #: Wrong appid/secret, IP not whitelisted, frozen secret: alert and retry slowly.
    CONFIG = "config"
    #: Daily or per-minute quota hit: back off hard.
    QUOTA = "quota"
    #: A call made with an access token was refused because of that token (40001, 40014,
    #: 42001, WeCom's 301002): refresh the token (within budget), then retry the call.
    TOKEN_INVALID = "token_invalid"


@dataclass(frozen=True)
class Errcode:
    meaning: str
    kind: FailureKind


_C, _T, _Q = FailureKind.CONFIG, FailureKind.TRANSIENT, FailureKind.QUOTA

ERRCODES: dict[int, Errcode] = {
    -1: Errcode("system busy", _T),
    40001: Errcode("invalid credential (secret wrong or token not latest)", _C),
    40002: Errcode("invalid grant_type", _C),
    40013: Errcode("invalid appid", _C),
    40014: Errcode("invalid access_token", _T),
    40097: Errcode("invalid arguments", _C),
    40125: Errcode("invalid appsecret", _C),
    40164: Errcode("caller IP not in the whitelist", _C),
    61004: Errcode("caller IP not in the whitelist", _C),
    40243: Errcode("AppSecret frozen", _C),
    41001: Errcode("access_token missing", _C),
    41002: Errcode("appid missing", _C),
    41004: Errcode("appsecret missing", _C),
    42001: Errcode("access_token expired", _T),
    89503: Errcode("caller IP needs the admin's confirmation", _C),
    45009: Errcode("daily API quota reached", _Q),
    45011: Errcode("API minute-limit reached", _Q),
    47001: Errcode("request data format error", _C),
    48006: Errcode("clear_quota used up for this month", _Q),
    # The open platform's component API (api_component_token, api_query_auth, ...).
    61003: Errcode("the account has not authorized this platform", _C),
    61005: Errcode("component_verify_ticket expired", _C),
    61006: Errcode("component_verify_ticket invalid", _C),
    61009: Errcode("authorization code invalid", _C),
    61010: Errcode("authorization code expired", _C),
    61011: Errcode("invalid component", _C),
    61023: Errcode("authorizer refresh token invalid: the customer must authorize again", _C),
}

WECOM_ERRCODES: dict[int, Errcode] = {
    -1: Errcode("system busy", _T),
    40001: Errcode("invalid secret (corpsecret wrong)", _C),
    40013: Errcode("invalid corpid", _C),
    40014: Errcode("invalid access_token", _T),
    40056: Errcode("invalid agentid", _C),
    40058: Errcode("invalid parameter", _C),
    41001: Errcode("access_token missing", _C),
    41002: Errcode("corpid missing", _C),
    41004: Errcode("corpsecret missing", _C),
    42001: Errcode("access_token expired", _T),
    45009: Errcode("API frequency limit reached", _Q),
    45011: Errcode("API minute-limit reached", _Q),
    48002: Errcode("API forbidden for this app", _C),
    60020: Errcode("caller IP not in the app's trusted IPs", _C),
    301002: Errcode("access_token of another agent", _C),
}

#: Codes that, on a call made with a token, blame that token.
_TOKEN_REFUSED: dict[Platform, frozenset[int]] = {
    Platform.WECHAT: frozenset({40001, 40014, 42001}),
    Platform.WECOM: frozenset({40014, 42001, 301002}),
}
#: Codes whose errmsg names the caller's IP, to whitelist.
IP_ERRCODES: dict[Platform, frozenset[int]] = {
    Platform.WECHAT: frozenset({40164, 61004}),
    Platform.WECOM: frozenset({60020}),
}


def describe(errcode: int) -> Errcode:
    """The meaning of WeChat's `errcode` on a token fetch; unknown ones are transient
    (WeChat adds codes over time)."""
    return classify(errcode, platform=Platform.WECHAT, uses_token=False)


def classify(errcode: int, *, platform: Platform, uses_token: bool) -> Errcode:
    """The meaning of `errcode` from `platform`, for a call made with a token or not."""
    table = WECOM_ERRCODES if platform is Platform.WECOM else ERRCODES
    known = table.get(errcode, Errcode("unknown errcode", FailureKind.TRANSIENT))
    if uses_token and errcode in _TOKEN_REFUSED[platform]:
        return Errcode(
            f"the access token used was refused: {known.meaning}", FailureKind.TOKEN_INVALID
        )
    return known
