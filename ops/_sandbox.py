"""A local stand-in for WeChat's access-token APIs, with switchable faults.

Demos and integration tests use it instead of api.weixin.qq.com. Errors come back the way
WeChat sends them: HTTP 200 with ``{"errcode": N, "errmsg": "..."}``.

Token endpoints (both check 40002 bad grant_type, 41002/41004 missing appid/secret,
40013 unknown appid, 40125 wrong secret):

* ``GET /cgi-bin/token?grant_type=client_credential&appid=&secret=`` ("classic"): every call
  issues a new token; the app's previous classic token then stays valid only ``overlap_s``
  more seconds (never past its own expiry).
* ``POST /cgi-bin/stable_token`` with JSON ``{"grant_type", "appid", "secret",
  "force_refresh"}`` ("stable", a token space of its own). Normal mode returns the same
  token, ``expires_in`` being its remaining whole seconds, until the last ``overlap_s``
  seconds of its life; then it issues a new one and the old one lives until its own
  expiry. ``force_refresh: true`` issues a new token and kills the old one at once; it is
  allowed 20 times per app in any 24 h (else 45009) and 30 s apart (else 45011). A body
  that is not a JSON object of strings (and a boolean ``force_refresh``) gets 47001.

Token users: ``GET /cgi-bin/getcallbackip?access_token=T`` answers ``{"ip_list":
["127.0.0.1"]}`` while T is valid, 42001 once it expired, 40001 when unknown or superseded,
41001 when missing. ``GET /cgi-bin/ticket/getticket?access_token=T&type=jsapi`` hands out a
ticket (the same one until its last ``overlap_s`` seconds).

Control endpoints: ``GET /sandbox/stats``, ``POST /sandbox/fault`` (see :class:`Fault`),
``POST /sandbox/reset``. Faults hit only the two token endpoints. A ``timeout`` fault waits
``delay_s`` and then answers normally (the token is issued, as WeChat would); the wait ends,
and the connection is dropped unanswered, as soon as the server stops.
"""

from __future__ import annotations

import json
import logging
import math
import re
import secrets
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import TCPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

logger = logging.getLogger(__name__)

FAULT_MODES = frozenset(
    {"none", "busy", "http500", "timeout", "garbage", "truncated", "quota", "minute_limit", "ip"}
)
FORCE_REFRESH_PER_DAY = 20
FORCE_REFRESH_MIN_INTERVAL_S = 30.0
TICKET_TYPES = frozenset({"jsapi", "wx_card"})
_DAY_S = 86_400.0
_POLL_S = 0.05  # how often the accept loop looks at the stop flag
_MAX_BODY_BYTES = 64 * 1024
_JSON, _HTML = "application/json", "text/html; charset=utf-8"
_FAULT_ERRCODES: dict[str, tuple[int, str]] = {
    "busy": (-1, "system error"),
    "quota": (45009, "reach max api daily quota limit"),
    "minute_limit": (45011, "api minute-quota reach limit  mustslower  retry next minute"),
    "ip": (40164, "invalid ip 127.0.0.1 ipv6 ::ffff:127.0.0.1, not in whitelist"),
}
_REDACT = re.compile(r"(access_token|secret|ticket)=([^&\s\"']{0,4})[^&\s\"']*")


def _err(errcode: int, errmsg: str) -> dict[str, object]:
    return {"errcode": errcode, "errmsg": errmsg}


def _new_secret_string() -> str:
    """A random url-safe token of 120-159 characters, like WeChat's."""
    return secrets.token_urlsafe(90 + secrets.randbelow(30))


def fault_reply(mode: str) -> tuple[int, str, bytes]:
    """Return (HTTP status, content type, body) a token request failing under ``mode`` gets."""
    if mode in _FAULT_ERRCODES:
        return 200, _JSON, json.dumps(_err(*_FAULT_ERRCODES[mode])).encode()
    if mode == "http500":
        return 500, _HTML, b"<html><body><h1>500 Internal Server Error</h1></body></html>"
    if mode == "garbage":
        page = "<!DOCTYPE html><html><head><title>WeChat</title></head><body>维护中</body></html>"
        return 200, _HTML, page.encode()
    if mode == "truncated":
        return 200, _JSON, b'{"access_token": "ab'
    raise ValueError(f"fault mode {mode!r} has no canned reply")


@dataclass(frozen=True)
class SandboxConfig:
    """What the sandbox serves: apps (appid -> secret), token lifetime and overlap window."""

    apps: Mapping[str, str]
    expires_in_s: int = 7200
    overlap_s: float = 300.0
    host: str = "127.0.0.1"
    port: int = 0  # 0 = pick a free port

    def __post_init__(self) -> None:
        if self.expires_in_s < 1 or self.overlap_s < 0:
            raise ValueError("expires_in_s must be >= 1 and overlap_s >= 0")
        object.__setattr__(self, "apps", dict(self.apps))


@dataclass(frozen=True)
class Fault:
    """A fault on the token endpoints: ``count`` failures to go (None = until cleared)."""

    mode: str
    count: int | None = None
    delay_s: float = 0.0  # only for mode "timeout"
    apps: frozenset[str] | None = None  # None = every appid

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

    @classmethod
    def from_json(cls, payload: object) -> Fault:
        """Build a fault from a ``/sandbox/fault`` body; ValueError says what is wrong."""
        if not isinstance(payload, dict):
            raise ValueError("fault body must be a JSON object")
        unknown = set(payload) - {"mode", "count", "delay_s", "apps"}
        if unknown:
            raise ValueError(f"unknown fault fields: {sorted(unknown)}")
        mode, apps = payload.get("mode"), payload.get("apps")
        if not isinstance(mode, str):
            raise ValueError("'mode' must be a string")
        if apps is not None and not (
            isinstance(apps, list) and all(isinstance(a, str) for a in apps)
        ):
            raise ValueError("'apps' must be a list of appids or null")
        return cls(
            mode=mode,
            count=payload.get("count"),
            delay_s=payload.get("delay_s", 0.0),
            apps=None if apps is None else frozenset(apps),
        )

    def as_json(self) -> dict[str, object]:
        apps = None if self.apps is None else sorted(self.apps)
        return {"mode": self.mode, "count": self.count, "delay_s": self.delay_s, "apps": apps}


@dataclass
class _Token:
    appid: str
    expires_at: float
    valid_until: float  # lowered when superseded (classic overlap, stable force_refresh)

    def error(self, now: float) -> dict[str, object] | None:
        if now >= self.expires_at:
            return _err(42001, "access_token expired")
        if now >= self.valid_until:
            return _err(40001, "invalid credential, access_token is invalid or not latest")
        return None


class SandboxState:
    """All the WeChat semantics, without HTTP. Thread-safe: every method takes one lock."""

    def __init__(self, config: SandboxConfig, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self._clock = clock
        self._lock = threading.Lock()
        self._reset_locked()

    def _reset_locked(self) -> None:
        self._tokens: dict[str, _Token] = {}
        self._current: dict[tuple[str, str], str] = {}  # (appid, "classic"|"stable") -> token
        self._forced_at: dict[str, deque[float]] = {a: deque() for a in self.config.apps}
        self._tickets: dict[tuple[str, str], tuple[str, float]] = {}
        self._fetches = {
            a: dict.fromkeys(("classic", "stable", "stable_forced", "rejected"), 0)
            for a in self.config.apps
        }
        self._issued = dict.fromkeys(self.config.apps, 0)
        self._fault: Fault | None = None
        self._prune_at = 1024

    def _credentials(
        self, grant_type: object, appid: object, secret: object
    ) -> str | dict[str, object]:
        """The appid when the caller may fetch a token, else WeChat's error answer."""
        if grant_type != "client_credential":
            return _err(40002, "invalid grant_type")
        if not appid:
            return _err(41002, "appid missing")
        expected = self.config.apps.get(str(appid))
        if expected is None:
            return _err(40013, "invalid appid")
        if not secret:
            return _err(41004, "appsecret missing")
        if not secrets.compare_digest(str(secret).encode(), expected.encode()):
            return _err(40125, "invalid appsecret")
        return str(appid)

    def _issue(self, appid: str, kind: str, now: float) -> dict[str, object]:
        if len(self._tokens) >= self._prune_at:  # forget dead tokens, amortised
            self._tokens = {k: t for k, t in self._tokens.items() if t.error(now) is None}
            self._prune_at = max(1024, 2 * len(self._tokens))
        token = _new_secret_string()
        expires_at = now + self.config.expires_in_s
        self._tokens[token] = _Token(appid, expires_at, expires_at)
        self._current[(appid, kind)] = token
        self._issued[appid] += 1
        logger.info("sandbox issued %s token %s... for %s", kind, token[:4], appid)
        return {"access_token": token, "expires_in": self.config.expires_in_s}

    def classic_token(
        self, appid: str | None, secret: str | None, grant_type: str | None
    ) -> dict[str, object]:
        with self._lock:
            checked = self._credentials(grant_type, appid, secret)
            if isinstance(checked, dict):
                return checked
            now = self._clock()
            self._fetches[checked]["classic"] += 1
            previous = self._tokens.get(self._current.get((checked, "classic"), ""))
            if previous is not None:
                previous.valid_until = min(previous.valid_until, now + self.config.overlap_s)
            return self._issue(checked, "classic", now)

    def stable_token(self, body: object) -> dict[str, object]:
        """Answer a stable_token call; ``body`` is the raw request body or its parsed JSON."""
        if isinstance(body, bytes | str):
            try:
                body = json.loads(body)
            except ValueError:
                body = None
        if not isinstance(body, dict) or not all(
            isinstance(body.get(k), str | None) for k in ("grant_type", "appid", "secret")
        ):
            return _err(47001, "data format error")
        force = body.get("force_refresh", False)
        if not isinstance(force, bool):
            return _err(47001, "data format error")
        with self._lock:
            checked = self._credentials(
                body.get("grant_type"), body.get("appid"), body.get("secret")
            )
            if isinstance(checked, dict):
                return checked
            now = self._clock()
            current = self._tokens.get(self._current.get((checked, "stable"), ""))
            if force:
                self._fetches[checked]["stable_forced"] += 1
                history = self._forced_at[checked]
                while history and history[0] <= now - _DAY_S:
                    history.popleft()
                if len(history) >= FORCE_REFRESH_PER_DAY:
                    return _err(
                        45009,
                        "reach max api daily quota limit: force_refresh is "
                        f"allowed {FORCE_REFRESH_PER_DAY} times per app per day",
                    )
                if history and now - history[-1] < FORCE_REFRESH_MIN_INTERVAL_S:
                    wait_s = math.ceil(FORCE_REFRESH_MIN_INTERVAL_S - (now - history[-1]))
                    return _err(
                        45011,
                        "api minute-quota reach limit: force_refresh calls must be "
                        f"{FORCE_REFRESH_MIN_INTERVAL_S:g} s apart, retry in {wait_s} s",
                    )
                history.append(now)
                if current is not None:
                    current.valid_until = min(current.valid_until, now)
                return self._issue(checked, "stable", now)
            self._fetches[checked]["stable"] += 1
            if current is not None and current.error(now) is None:
                left_s = current.expires_at - now
                if left_s > self.config.overlap_s:
                    token = self._current[(checked, "stable")]
                    return {"access_token": token, "expires_in": int(left_s)}
            return self._issue(checked, "stable", now)

    def _lookup(self, access_token: str | None, now: float) -> _Token | dict[str, object]:
        """The record of a currently valid token, else WeChat's error answer."""
        if not access_token:
            return _err(41001, "access_token missing")
        record = self._tokens.get(access_token)
        if record is None:
            return _err(40001, "invalid credential, access_token is invalid or not latest")
        return record.error(now) or record

    def check(self, access_token: str | None) -> dict[str, object]:
        """Answer getcallbackip: the IP list for a valid token, else WeChat's error."""
        with self._lock:
            found = self._lookup(access_token, self._clock())
        return found if isinstance(found, dict) else {"ip_list": ["127.0.0.1"]}

    def ticket(self, access_token: str | None, ticket_type: str | None) -> dict[str, object]:
        with self._lock:
            now = self._clock()
            found = self._lookup(access_token, now)
            if isinstance(found, dict):
                return found
            if ticket_type not in TICKET_TYPES:
                return _err(40097, "invalid args")
            key = (found.appid, ticket_type)
            ticket, expires_at = self._tickets.get(key, ("", now))
            if expires_at - now <= self.config.overlap_s:
                ticket, expires_at = _new_secret_string(), now + self.config.expires_in_s
                self._tickets[key] = (ticket, expires_at)
            left_s = int(expires_at - now)
            return {"errcode": 0, "errmsg": "ok", "ticket": ticket, "expires_in": left_s}

    def is_valid(self, access_token: str) -> bool:
        with self._lock:
            return isinstance(self._lookup(access_token, self._clock()), _Token)

    def stats(self) -> dict[str, object]:
        with self._lock:
            return {
                "fetches": {appid: dict(counts) for appid, counts in self._fetches.items()},
                "issued": dict(self._issued),
                "fault": None if self._fault is None else self._fault.as_json(),
            }

    def set_fault(self, fault: Fault | None) -> None:
        with self._lock:
            self._fault = None if fault is None or fault.mode == "none" else fault
        logger.info("sandbox fault set to %s", fault)

    def take_fault(self, appid: str | None) -> Fault | None:
        """The fault a token request for ``appid`` suffers now, if any; counts it down."""
        with self._lock:
            fault = self._fault
            if fault is None or not (fault.apps is None or appid in fault.apps):
                return None
            if fault.count is not None:
                self._fault = replace(fault, count=fault.count - 1) if fault.count > 1 else None
            if fault.mode != "timeout" and appid in self._fetches:
                self._fetches[appid]["rejected"] += 1
        logger.info("sandbox fault %s hit a token request for %s", fault.mode, appid)
        return fault

    def reset(self) -> None:
        with self._lock:
            self._reset_locked()
        logger.info("sandbox reset")


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self, config: SandboxConfig, state: SandboxState, stopping: threading.Event
    ) -> None:
        self.state, self.stopping = state, stopping
        super().__init__((config.host, config.port), _Handler)
        self.timeout = _POLL_S

    def server_bind(self) -> None:  # skip HTTPServer's getfqdn(), which may hit DNS
        TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), self.server_address[1]

    def handle_error(self, request: Any, client_address: Any) -> None:
        logger.debug("sandbox request from %s failed: %r", client_address, sys.exc_info()[1])


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    server_version = "WeChatSandbox/1.0"

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        logger.debug("sandbox %s %s -> %s", self.command, urlsplit(self.path).path, code)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("sandbox http: %s", _REDACT.sub(r"\1=\2...", format % args))

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            logger.debug("sandbox client left before its answer")

    def _send_json(self, status: int, payload: object) -> None:
        self._send(status, _JSON, json.dumps(payload).encode())

    def _token_endpoint(self, appid: str | None, answer: Callable[[], dict[str, object]]) -> None:
        fault = self.server.state.take_fault(appid)
        if fault is not None and fault.mode == "timeout":
            if self.server.stopping.wait(fault.delay_s):
                self.close_connection = True  # stopping: drop the connection unanswered
                return
        elif fault is not None:
            self._send(*fault_reply(fault.mode))
            return
        self._send_json(200, answer())

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = {key: values[0] for key, values in parse_qs(url.query).items()}
        state = self.server.state
        if url.path == "/cgi-bin/token":
            args = (query.get("appid"), query.get("secret"), query.get("grant_type"))
            self._token_endpoint(args[0], lambda: state.classic_token(*args))
        elif url.path == "/cgi-bin/getcallbackip":
            self._send_json(200, state.check(query.get("access_token")))
        elif url.path == "/cgi-bin/ticket/getticket":
            self._send_json(200, state.ticket(query.get("access_token"), query.get("type")))
        elif url.path == "/sandbox/stats":
            self._send_json(200, state.stats())
        else:
            self._send_json(404, {"error": f"unknown path {url.path}"})

    def do_POST(self) -> None:
        path, state = urlsplit(self.path).path, self.server.state
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= _MAX_BODY_BYTES:
            self._send_json(400, {"error": f"Content-Length must be 0..{_MAX_BODY_BYTES}"})
            return
        raw = self.rfile.read(length)
        if path == "/cgi-bin/stable_token":
            try:
                parsed = json.loads(raw)
            except ValueError:
                parsed = None
            appid = parsed.get("appid") if isinstance(parsed, dict) else None
            self._token_endpoint(
                appid if isinstance(appid, str) else None, lambda: state.stable_token(raw)
            )
        elif path == "/sandbox/fault":
            try:
                fault = Fault.from_json(json.loads(raw))
            except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError included
                self._send_json(400, {"error": f"bad fault: {exc}"})
                return
            state.set_fault(fault)
            self._send_json(200, {"ok": True, "fault": state.stats()["fault"]})
        elif path == "/sandbox/reset":
            state.reset()
            self._send_json(200, {"ok": True})
        else:
            self._send_json(404, {"error": f"unknown path {path}"})


class SandboxServer:
    """The sandbox over HTTP: a ThreadingHTTPServer, bound (and listening) on construction."""

    def __init__(self, config: SandboxConfig, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.state = SandboxState(config, clock)
        self._stopping = threading.Event()
        self._loop_done = threading.Event()
        self._lock = threading.Lock()
        self._started = False
        self._loop_thread_id: int | None = None
        self._httpd = _HTTPServer(config, self.state, self._stopping)

    @property
    def base_url(self) -> str:
        return f"http://{self._httpd.server_name}:{self._httpd.server_port}"

    def _claim_start(self) -> None:
        with self._lock:
            if self._started or self._stopping.is_set():
                raise RuntimeError("a SandboxServer can be started only once")
            self._started = True
        logger.info("WeChat sandbox serving %s on %s", sorted(self.config.apps), self.base_url)

    def _loop(self) -> None:
        self._loop_thread_id = threading.get_ident()
        try:
            while not self._stopping.is_set():
                self._httpd.handle_request()  # returns at least every _POLL_S
        finally:
            self._httpd.server_close()
            self._loop_done.set()

    def start(self) -> SandboxServer:
        """Serve from a background thread; returns self (already listening)."""
        self._claim_start()
        threading.Thread(target=self._loop, name="wechat-sandbox", daemon=True).start()
        return self

    def serve_forever(self) -> None:
        """Serve in this thread until stop() (from any thread) or KeyboardInterrupt."""
        self._claim_start()
        try:
            self._loop()
        except KeyboardInterrupt:
            logger.info("WeChat sandbox interrupted")
        finally:
            self._stopping.set()

    def stop(self) -> None:
        """Stop serving and close the socket; idempotent, returns within ~0.1 s."""
        self._stopping.set()  # also ends the waits of "timeout" faults
        with self._lock:
            started = self._started
        if not started:
            self._httpd.server_close()
        elif threading.get_ident() != self._loop_thread_id:
            self._loop_done.wait(timeout=2.0)

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def parse_apps(spec: str) -> dict[str, str]:
    """Parse ``"appid:secret,appid2:secret2"``; ValueError names the bad entry (not secrets)."""
    if not spec.strip():
        raise ValueError("no apps given; expected 'appid:secret[,appid2:secret2...]'")
    apps: dict[str, str] = {}
    for position, entry in enumerate(spec.split(","), start=1):
        if not entry.strip():
            raise ValueError(f"app entry #{position} is empty")
        appid, colon, secret = (part.strip() for part in entry.partition(":"))
        if not colon:
            raise ValueError(f"app entry #{position} has no ':'; expected appid:secret")
        if not appid or not secret:
            raise ValueError(f"app entry #{position} has an empty appid or secret")
        if appid in apps:
            raise ValueError(f"duplicate appid {appid!r} in app list")
        apps[appid] = secret
    return apps
