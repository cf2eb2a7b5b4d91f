"""Switchable faults: which endpoints fail, how, how often, for whom; and WeChat's error text.

A fault hits the endpoints it names (default: the three token endpoints, as before
tickets existed) and, when ``apps`` is given, only the credentials named there: an appid,
a WeCom corp id, or an agent's ``corp_id/agent_id``.
"""

from __future__ import annotations

import ipaddress
import json
import math
import secrets
from dataclasses import dataclass

FAULT_MODES = frozenset(
    {
        "none",
        "busy",
        "http500",
        "timeout",
        "garbage",
        "truncated",
        "quota",
        "minute_limit",
        "ip",
        "invalid_credential",
        "expired",
        "ticket_expired",
        "ticket_invalid",
        "refresh_token_invalid",
    }
)
#: Every endpoint a fault can hit, by name.
ENDPOINTS = frozenset(
    {
        "token",
        "stable_token",
        "getticket",
        "getcallbackip",
        "clear_quota",
        "wecom_gettoken",
        "wecom_corp_ticket",
        "wecom_agent_ticket",
        "wecom_agent_get",
        "component_token",
        "query_auth",
        "authorizer_token",
        "authorizer_list",
        "start_push_ticket",
    }
)
TOKEN_ENDPOINTS = frozenset({"token", "stable_token", "wecom_gettoken"})
WECOM_ENDPOINTS = frozenset(e for e in ENDPOINTS if e.startswith("wecom_"))
#: The open platform's component endpoints (a fault names them to hit them).
COMPONENT_ENDPOINTS = frozenset(
    {"component_token", "query_auth", "authorizer_token", "authorizer_list", "start_push_ticket"}
)

JSON, HTML = "application/json", "text/html; charset=utf-8"

_WECHAT_ERRCODES: dict[str, tuple[int, str]] = {
    "busy": (-1, "system error"),
    "quota": (45009, "reach max api daily quota limit"),
    "minute_limit": (45011, "api minute-quota reach limit  mustslower  retry next minute"),
    "invalid_credential": (40001, "invalid credential, access_token is invalid or not latest"),
    "expired": (42001, "access_token expired"),
    "ticket_expired": (61005, "component ticket is expired"),
    "ticket_invalid": (61006, "component ticket is invalid"),
    "refresh_token_invalid": (61023, "refresh_token is invalid"),
}
_WECOM_ERRCODES: dict[str, tuple[int, str]] = {
    "busy": (-1, "system busy"),
    "quota": (45009, "api freq out of limit"),
    "minute_limit": (45011, "api minute-quota reach limit"),
    "invalid_credential": (40014, "invalid access_token"),
    "expired": (42001, "access_token expired"),
}


def err(errcode: int, errmsg: str) -> dict[str, object]:
    return {"errcode": errcode, "errmsg": errmsg}


def rid() -> str:
    """A request id like the one WeChat appends to its errmsg."""
    return "-".join(secrets.token_hex(4) for _ in range(3))


def wechat_ip_errmsg(caller_ip: str) -> str:
    """40164's errmsg as WeChat words it, naming the caller's address."""
    try:
        address = ipaddress.ip_address(caller_ip)
    except ValueError:
        address = ipaddress.ip_address("127.0.0.1")
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if isinstance(address, ipaddress.IPv4Address):
        shown = f"{address} ipv6 ::ffff:{address}"
    else:
        shown = f" ipv6 {address}"
    return f"invalid ip {shown}, not in whitelist rid: {rid()}"


def wecom_ip_errmsg(caller_ip: str) -> str:
    """60020's errmsg as WeCom words it, naming the caller's address."""
    hint = f"{secrets.randbelow(10**10)}_{secrets.token_hex(6)}"
    return (
        f"not allow to access from your ip, hint: [{hint}], from ip: {caller_ip}, "
        "more info at https://open.work.weixin.qq.com/devtool/query?e=60020"
    )


def fault_reply(
    mode: str, *, endpoint: str = "token", caller_ip: str = "127.0.0.1"
) -> tuple[int, str, bytes]:
    """Return (HTTP status, content type, body) a request to ``endpoint`` failing under
    ``mode`` gets."""
    wecom = endpoint in WECOM_ENDPOINTS
    if mode == "ip":
        reply = (
            err(60020, wecom_ip_errmsg(caller_ip))
            if wecom
            else err(40164, wechat_ip_errmsg(caller_ip))
        )
        return 200, JSON, json.dumps(reply).encode()
    codes = _WECOM_ERRCODES if wecom else _WECHAT_ERRCODES
    if mode in codes:
        return 200, JSON, json.dumps(err(*codes[mode])).encode()
    if mode == "http500":
        return 500, HTML, b"<html><body><h1>500 Internal Server Error</h1></body></html>"
    if mode == "garbage":
        page = "<!DOCTYPE html><html><head><title>WeChat</title></head><body>维护中</body></html>"
        return 200, HTML, page.encode()
    if mode == "truncated":
        field = "access_token" if endpoint in TOKEN_ENDPOINTS else "ticket"
        return 200, JSON, f'{{"{field}": "ab'.encode()
    raise ValueError(f"fault mode {mode!r} has no canned reply")


@dataclass(frozen=True)
class Fault:
    """A fault: ``count`` failures to go (None = until cleared), on ``endpoints`` (None =
    the token endpoints) for ``apps`` (None = every credential)."""

    mode: str
    count: int | None = None
    delay_s: float = 0.0  # only for mode "timeout"
    apps: frozenset[str] | None = None
    endpoints: frozenset[str] | None = None

    def __post_init__(self) -> None:
        if self.mode not in FAULT_MODES:
            raise ValueError(f"unknown fault mode {self.mode!r}; use one of {sorted(FAULT_MODES)}")
        count: object = self.count
        if count is not None and (type(count) is not int or count < 1):
            raise ValueError("count must be a positive integer or null")
        delay: object = self.delay_s
        if type(delay) not in (int, float) or not 0 <= self.delay_s < math.inf:
            raise ValueError("delay_s must be a finite number >= 0")
        if self.mode == "timeout" and self.delay_s <= 0:
            raise ValueError("a timeout fault needs delay_s > 0")
        if self.apps is not None:
            object.__setattr__(self, "apps", frozenset(self.apps))
        if self.endpoints is not None:
            endpoints = frozenset(self.endpoints)
            unknown = endpoints - ENDPOINTS
            if unknown or not endpoints:
                raise ValueError(
                    f"unknown endpoints {sorted(unknown)}; use some of {sorted(ENDPOINTS)}"
                )
            object.__setattr__(self, "endpoints", endpoints)

    def hits(self, endpoint: str, owners: tuple[str, ...]) -> bool:
        """True when a request to ``endpoint`` on behalf of any of ``owners`` suffers it."""
        if endpoint not in (TOKEN_ENDPOINTS if self.endpoints is None else self.endpoints):
            return False
        return self.apps is None or any(owner in self.apps for owner in owners)

    @classmethod
    def from_json(cls, payload: object) -> Fault:
        """Build a fault from a ``/sandbox/fault`` body; ValueError says what is wrong."""
        if not isinstance(payload, dict):
            raise ValueError("fault body must be a JSON object")
        unknown = set(payload) - {"mode", "count", "delay_s", "apps", "endpoints"}
        if unknown:
            raise ValueError(f"unknown fault fields: {sorted(unknown)}")
        mode = payload.get("mode")
        if not isinstance(mode, str):
            raise ValueError("'mode' must be a string")
        lists = {}
        for name, what in (("apps", "appids"), ("endpoints", "endpoint names")):
            value = payload.get(name)
            if value is not None and not (
                isinstance(value, list) and all(isinstance(v, str) for v in value)
            ):
                raise ValueError(f"'{name}' must be a list of {what} or null")
            lists[name] = None if value is None else frozenset(value)
        return cls(
            mode=mode,
            count=payload.get("count"),
            delay_s=payload.get("delay_s", 0.0),
            apps=lists["apps"],
            endpoints=lists["endpoints"],
        )

    def as_json(self) -> dict[str, object]:
        apps = None if self.apps is None else sorted(self.apps)
        endpoints = None if self.endpoints is None else sorted(self.endpoints)
        return {
            "mode": self.mode,
            "count": self.count,
            "delay_s": self.delay_s,
            "apps": apps,
            "endpoints": endpoints,
        }
