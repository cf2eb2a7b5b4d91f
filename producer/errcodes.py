"""What WeChat's errcodes mean for a token fetch, and how hard to back off after each."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class FailureKind(enum.StrEnum):
    """How the refresher reacts to a failed fetch."""

    #: Busy, timeouts, 5xx, garbage: retry soon with capped, jittered backoff.
    TRANSIENT = "transient"
    #: Wrong appid/secret, IP not whitelisted, frozen secret: alert and retry slowly.
    CONFIG = "config"
    #: Daily or per-minute quota hit: back off hard.
    QUOTA = "quota"


@dataclass(frozen=True)
class Errcode:
    meaning: str
    kind: FailureKind


ERRCODES: dict[int, Errcode] = {
    -1: Errcode("system busy", FailureKind.TRANSIENT),
    40001: Errcode("invalid credential (secret wrong or token not latest)", FailureKind.CONFIG),
    40002: Errcode("invalid grant_type", FailureKind.CONFIG),
    40013: Errcode("invalid appid", FailureKind.CONFIG),
    40125: Errcode("invalid appsecret", FailureKind.CONFIG),
    40164: Errcode("caller IP not in the whitelist", FailureKind.CONFIG),
    61004: Errcode("caller IP not in the whitelist", FailureKind.CONFIG),
    40243: Errcode("AppSecret frozen", FailureKind.CONFIG),
    41002: Errcode("appid missing", FailureKind.CONFIG),
    41004: Errcode("appsecret missing", FailureKind.CONFIG),
    89503: Errcode("caller IP needs the admin's confirmation", FailureKind.CONFIG),
    45009: Errcode("daily API quota reached", FailureKind.QUOTA),
    45011: Errcode("API minute-limit reached", FailureKind.QUOTA),
    47001: Errcode("request data format error", FailureKind.CONFIG),
}


def describe(errcode: int) -> Errcode:
    """The meaning of `errcode`; unknown ones are transient (WeChat adds codes over time)."""
    return ERRCODES.get(errcode, Errcode("unknown errcode", FailureKind.TRANSIENT))
