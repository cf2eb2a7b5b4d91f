"""Signatures for WeChat's and WeCom's JS-SDK and cards, made the way WeChat checks them.

    from consumer_lib import TokenClient
    from consumer_lib.jssdk import jssdk_config

    with TokenClient.from_env() as tokens:
        config = jssdk_config(tokens, "wx1234567890abcdef", "https://h5.example.com/p?id=3")
        # -> {"appId", "timestamp", "nonceStr", "signature"}: hand them to wx.config()

The mistakes these helpers rule out (each gives "invalid signature"): keys not in ASCII
order, URL-encoded values, a URL with its ``#fragment`` (WeChat signs the page's URL up to
``#``), a nonce or timestamp in ``wx.config`` other than the signed ones, a stale ticket
(the ticket comes from `TokenClient.get_ticket`, which never returns an expired one).
"""

from __future__ import annotations

import hashlib
import re
import secrets
import string
import time
from collections.abc import Callable
from typing import Protocol
from urllib.parse import urlsplit

__all__ = [
    "TicketSource",
    "agent_config",
    "card_ext",
    "card_signature",
    "jssdk_config",
    "jssdk_signature",
    "new_nonce",
    "page_url",
    "wecom_config",
]

MAX_URL_CHARS = 4096
_NONCE = re.compile(r"^[A-Za-z0-9]{1,32}$")
_ALPHABET = string.ascii_letters + string.digits


class TicketSource(Protocol):
    """Anything that hands out current tickets, such as `TokenClient`."""

    def get_ticket(self, app_id: str, ticket: str, timeout: float = 5.0) -> str: ...


def _sha1(text: str) -> str:
    return hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()


def new_nonce(length: int = 16) -> str:
    """A random nonceStr of letters and digits (WeChat allows up to 32)."""
    if not 1 <= length <= 32:
        raise ValueError("a nonce is 1-32 characters")
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def page_url(url: str) -> str:
    """The URL WeChat signs for a page: absolute http(s), raw (not encoded), without
    ``#...``. Anything else raises `ValueError`."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL_CHARS:
        raise ValueError(f"the page URL must be a string of 1-{MAX_URL_CHARS} characters")
    if any(c.isspace() for c in url) or not url.isprintable():
        raise ValueError("the page URL has whitespace or control characters")
    signed = url.split("#", 1)[0]
    parts = urlsplit(signed)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("the page URL must be absolute http:// or https:// with a host")
    try:
        port = parts.port  # urllib raises ValueError past 65535 (or for a non-number)
    except ValueError:
        port = 0
    if port == 0:
        raise ValueError("the page URL's port must be 1-65535")
    return signed


def _check(noncestr: str, timestamp: int) -> None:
    if not isinstance(noncestr, str) or not _NONCE.fullmatch(noncestr):
        raise ValueError("nonceStr must be 1-32 letters or digits")
    if isinstance(timestamp, bool) or not isinstance(timestamp, int) or timestamp <= 0:
        raise ValueError("timestamp must be a positive integer of UNIX seconds")


def jssdk_signature(ticket: str, noncestr: str, timestamp: int, url: str) -> str:
    """sha1 of ``jsapi_ticket=..&noncestr=..&timestamp=..&url=..`` (raw values, URL up to
    ``#``), as ``wx.config`` and ``wx.agentConfig`` expect it."""
    _check(noncestr, timestamp)
    if not ticket or any(c.isspace() for c in ticket):
        raise ValueError("the ticket is empty or has whitespace")
    plain = f"jsapi_ticket={ticket}&noncestr={noncestr}&timestamp={timestamp}&url={page_url(url)}"
    return _sha1(plain)


def _signed(
    source: TicketSource,
    app_id: str,
    ticket: str,
    url: str,
    *,
    clock: Callable[[], float],
    nonce: str | None,
    timeout: float,
) -> tuple[int, str, str]:
    signed_url = page_url(url)  # a bad URL fails before any wait for a ticket
    value = source.get_ticket(app_id, ticket, timeout)
    timestamp, noncestr = int(clock()), nonce or new_nonce()
    return timestamp, noncestr, jssdk_signature(value, noncestr, timestamp, signed_url)


def jssdk_config(
    source: TicketSource,
    app_id: str,
    url: str,
    *,
    clock: Callable[[], float] = time.time,
    nonce: str | None = None,
    timeout: float = 5.0,
) -> dict[str, object]:
    """What an official account's ``wx.config`` needs: appId, timestamp, nonceStr, signature."""
    timestamp, noncestr, signature = _signed(
        source, app_id, "jsapi", url, clock=clock, nonce=nonce, timeout=timeout
    )
    return {"appId": app_id, "timestamp": timestamp, "nonceStr": noncestr, "signature": signature}


def wecom_config(
    source: TicketSource,
    app_id: str,
    url: str,
    *,
    corp_id: str,
    clock: Callable[[], float] = time.time,
    nonce: str | None = None,
    timeout: float = 5.0,
) -> dict[str, object]:
    """What WeCom's ``wx.config`` needs, signed with the corp ticket of WeCom app `app_id`
    (its ``appId`` is the corp id)."""
    timestamp, noncestr, signature = _signed(
        source, app_id, "corp_jsapi", url, clock=clock, nonce=nonce, timeout=timeout
    )
    return {"appId": corp_id, "timestamp": timestamp, "nonceStr": noncestr, "signature": signature}


def agent_config(
    source: TicketSource,
    app_id: str,
    url: str,
    *,
    corp_id: str,
    agent_id: str | int,
    clock: Callable[[], float] = time.time,
    nonce: str | None = None,
    timeout: float = 5.0,
) -> dict[str, object]:
    """What WeCom's ``wx.agentConfig`` needs (corpid, agentid, timestamp, nonceStr,
    signature), signed with the agent ticket of WeCom app `app_id`."""
    timestamp, noncestr, signature = _signed(
        source, app_id, "agent_config", url, clock=clock, nonce=nonce, timeout=timeout
    )
    return {
        "corpid": corp_id,
        "agentid": str(agent_id),
        "timestamp": timestamp,
        "nonceStr": noncestr,
        "signature": signature,
    }


def card_signature(
    api_ticket: str,
    timestamp: int,
    nonce_str: str,
    *,
    card_id: str,
    code: str = "",
    openid: str = "",
) -> str:
    """The ``cardExt`` signature of ``wx.addCard``: sha1 of the values of api_ticket,
    timestamp, card_id, code, openid and nonce_str, sorted, concatenated."""
    _check(nonce_str, timestamp)
    values = [api_ticket, str(timestamp), card_id, code, openid, nonce_str]
    if not api_ticket or not card_id or any(c.isspace() for v in values for c in v):
        raise ValueError("api_ticket and card_id are needed, and no value may hold whitespace")
    return _sha1("".join(sorted(values)))


def card_ext(
    source: TicketSource,
    app_id: str,
    card_id: str,
    *,
    code: str = "",
    openid: str = "",
    clock: Callable[[], float] = time.time,
    nonce: str | None = None,
    timeout: float = 5.0,
) -> dict[str, object]:
    """A ``cardExt`` for ``wx.addCard`` (JSON-encode it), signed with the app's wx_card
    ticket; code and openid appear only when given, as WeChat wants."""
    ticket = source.get_ticket(app_id, "wx_card", timeout)
    timestamp, noncestr = int(clock()), nonce or new_nonce()
    ext: dict[str, object] = {"timestamp": str(timestamp), "nonce_str": noncestr}
    if code:
        ext["code"] = code
    if openid:
        ext["openid"] = openid
    ext["signature"] = card_signature(
        ticket, timestamp, noncestr, card_id=card_id, code=code, openid=openid
    )
    return ext
