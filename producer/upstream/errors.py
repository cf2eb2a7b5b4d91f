"""One call to WeChat or WeCom, and the strict judging of its answer.

Every upstream client goes through `call()` (requests' exceptions stop here: their text
may hold the URL, and so a secret or a token) and `judge()` (HTTP status, size, JSON,
errcode). What comes out is a JSON object with errcode 0, or an `UpstreamError` whose
`kind` says how to back off, whose `errcode` is upstream's, and whose `caller_ip` is the
address upstream says it saw when the IP is not whitelisted (40164, 61004, 60020).
"""

from __future__ import annotations

import enum
import ipaddress
import json
import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests

from consumer_lib.errors import WxTokenError
from consumer_lib.wire.kinds import Platform
from consumer_lib.wire.update import MAX_LIFETIME_S, MAX_TOKEN_CHARS
from producer.upstream.errcodes import IP_ERRCODES, FailureKind, classify

log = logging.getLogger(__name__)

#: An answer bigger than this is refused unread (WeChat's are a few hundred bytes).
MAX_ANSWER_BYTES = 64 * 1024
_ADDRESS_LIKE = re.compile(r"[0-9A-Fa-f:.]{3,45}")


class UpstreamError(WxTokenError):
    """Upstream did not give us a usable answer; `kind` says how to back off."""

    def __init__(
        self,
        message: str,
        *,
        kind: FailureKind,
        errcode: int | None = None,
        caller_ip: str | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.errcode = errcode
        #: The caller address upstream named in its errmsg (validated), to whitelist.
        self.caller_ip = caller_ip


@dataclass(frozen=True)
class FetchedToken:
    """A token or ticket as upstream handed it out; `expires_in_s` counts from the
    request's start."""

    value: str
    expires_in_s: int

    def __repr__(self) -> str:
        return f"FetchedToken(value=<{len(self.value)} chars>, expires_in_s={self.expires_in_s})"


def call(send: Callable[[], requests.Response]) -> tuple[int, bytes]:
    """Run one request (sent with ``stream=True``); return its status and body, read up
    to `MAX_ANSWER_BYTES`. Every failure is a transient `UpstreamError` without the
    exception's text."""
    failure = "no answer"
    answer: tuple[int, bytes] | None = None
    oversize = False
    try:
        response = send()
        try:
            body = bytearray()
            for chunk in response.iter_content(8192):
                body += chunk
                if len(body) > MAX_ANSWER_BYTES:
                    oversize = True
                    break
            answer = (response.status_code, bytes(body))
        finally:
            response.close()
    except requests.Timeout:
        failure = "timed out"
    except requests.RequestException as exc:
        # The exception's text may contain the URL with the secret: keep only its type.
        failure = f"request failed ({exc.__class__.__name__})"
    if oversize:
        raise UpstreamError(f"answer over {MAX_ANSWER_BYTES} bytes", kind=FailureKind.TRANSIENT)
    if answer is None:
        # Raised outside the handler, so no __context__ keeps the URL (and secret) alive.
        raise UpstreamError(failure, kind=FailureKind.TRANSIENT)
    return answer


def caller_ip_from(errmsg: str) -> str | None:
    """The first IP address in `errmsg` (an IPv4-mapped IPv6 one shown as IPv4), or None."""
    for found in _ADDRESS_LIKE.findall(errmsg):
        trimmed = found.rstrip(".:")
        for candidate in (trimmed, trimmed.lstrip(".:")):  # "ip:1.2.3.4" leaves a ':'
            try:
                address = ipaddress.ip_address(candidate)
                break
            except ValueError:
                continue
        else:
            continue
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(address)
    return None


def judge(status_code: int, body: bytes, *, platform: Platform, uses_token: bool) -> dict[str, Any]:
    """The answer as a JSON object with no error, or the `UpstreamError` it amounts to."""
    if status_code != 200:
        raise UpstreamError(f"HTTP {status_code}", kind=FailureKind.TRANSIENT)
    if len(body) > MAX_ANSWER_BYTES:
        raise UpstreamError(f"answer over {MAX_ANSWER_BYTES} bytes", kind=FailureKind.TRANSIENT)
    try:
        data: Any = json.loads(body)
    except (ValueError, RecursionError):
        raise UpstreamError(
            f"unparsable answer ({len(body)} bytes, not JSON)", kind=FailureKind.TRANSIENT
        ) from None
    if not isinstance(data, dict):
        raise UpstreamError("answer is not a JSON object", kind=FailureKind.TRANSIENT)
    errcode = data.get("errcode", 0)
    if errcode in (0, None) and not isinstance(errcode, bool):
        return data
    if isinstance(errcode, bool) or not isinstance(errcode, int):
        raise UpstreamError("answer has a non-integer errcode", kind=FailureKind.TRANSIENT)
    meaning = classify(errcode, platform=platform, uses_token=uses_token)
    raw_errmsg = data.get("errmsg", "")
    # One printable line whatever upstream sends: the message ends up in a log line.
    errmsg = "".join(c for c in " ".join(str(raw_errmsg).split()) if c.isprintable())[:160]
    caller_ip = caller_ip_from(errmsg) if errcode in IP_ERRCODES[platform] else None
    hint = f"; whitelist caller IP {caller_ip}" if caller_ip else ""
    raise UpstreamError(
        f"errcode {errcode} ({meaning.meaning}): {errmsg}{hint}",
        kind=meaning.kind,
        errcode=errcode,
        caller_ip=caller_ip,
    )


def take_credential(data: dict[str, Any], field: str) -> FetchedToken:
    """`data[field]` and `data["expires_in"]` as a fetched credential, checked strictly."""
    value = data.get(field)
    if not isinstance(value, str) or not value or len(value) > MAX_TOKEN_CHARS:
        raise UpstreamError(f"answer lacks a usable {field}", kind=FailureKind.TRANSIENT)
    if not value.isprintable() or value.strip() != value or " " in value:
        raise UpstreamError(
            f"{field} has whitespace or control characters", kind=FailureKind.TRANSIENT
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


class TokenCheck(enum.StrEnum):
    """What a cheap call made with a token said about it."""

    ACCEPTED = "accepted"
    REFUSED = "refused"  # 40001/40014/42001 (WeCom: also 301002): the token is dead here


def resolve_environment_once(session: requests.Session, base_url: str) -> None:
    """Read the proxy and CA settings of the environment (HTTPS_PROXY, NO_PROXY,
    REQUESTS_CA_BUNDLE, ...) for `base_url` now, once, instead of at every call: requests
    does that per request, and with 30,000 credentials it was a tenth of the producer's
    CPU while filling. The environment of a running producer does not change."""
    if not session.trust_env:
        return
    found = session.merge_environment_settings(base_url, {}, None, None, None)
    session.trust_env = False
    session.proxies.update(found["proxies"])
    session.verify = found["verify"]
    if found["cert"] is not None:
        session.cert = found["cert"]


class UpstreamClient:
    """What WeChat's and WeCom's clients share: a base URL, a session, timeouts, and GET and
    POST through `call()` and `judge()`. One upstream call per method of a subclass; every
    failure is an `UpstreamError` with its kind."""

    platform: Platform

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
        resolve_environment_once(self._session, self._base_url)

    def close(self) -> None:
        """Close the HTTP pool's connections (a call after this opens new ones)."""
        self._session.close()

    def _get(self, path: str, params: dict[str, str], *, uses_token: bool) -> dict[str, object]:
        status, body = call(
            lambda: self._session.get(
                f"{self._base_url}{path}", params=params, timeout=self._timeout, stream=True
            )
        )
        return judge(status, body, platform=self.platform, uses_token=uses_token)

    def _post(
        self,
        path: str,
        payload: dict[str, object],
        *,
        params: dict[str, str] | None = None,
        uses_token: bool = False,
    ) -> dict[str, object]:
        status, body = call(
            lambda: self._session.post(
                f"{self._base_url}{path}",
                json=payload,
                params=params,
                timeout=self._timeout,
                stream=True,
            )
        )
        return judge(status, body, platform=self.platform, uses_token=uses_token)

    def check_token(self, access_token: str) -> TokenCheck:
        """getcallbackip with `access_token`: does upstream accept it right now (refused:
        40001/40014/42001, WeCom's 301002)? Other failures (busy, IP, garbage) raise, since
        they say nothing about the token."""
        try:
            data = self._get(
                "/cgi-bin/getcallbackip", {"access_token": access_token}, uses_token=True
            )
        except UpstreamError as exc:
            if exc.kind is FailureKind.TOKEN_INVALID:
                return TokenCheck.REFUSED
            raise
        ips = data.get("ip_list")
        if not isinstance(ips, list) or not all(isinstance(ip, str) for ip in ips):
            raise UpstreamError("answer lacks an ip_list", kind=FailureKind.TRANSIENT)
        return TokenCheck.ACCEPTED
