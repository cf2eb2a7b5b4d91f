"""The sandbox's HTTP face: WeChat's and WeCom's routes, and the ``/sandbox/*`` controls.

Controls: ``GET /sandbox/stats``; ``GET /sandbox/ticket?ticket=`` (is it one the sandbox
accepts, and whose); ``POST /sandbox/fault`` (see `Fault`); ``POST /sandbox/reset``;
``POST /sandbox/invalidate`` ``{"owner": appid or corp_id/agent_id}`` (kill a token early);
``POST /sandbox/verify_signature`` ``{"owner", "ticket_type", "url", "noncestr",
"timestamp", "signature"}`` (``{"valid": bool}``, checked against the owner's live ticket).

A ``timeout`` fault waits ``delay_s`` and then answers normally (the token is issued, as
WeChat would); the wait ends, and the connection is dropped unanswered, once the server stops.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import socket
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import TCPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .config import SandboxConfig
from .faults import JSON, Fault, fault_reply
from .pusher import PlatformPusher
from .state import SandboxState

logger = logging.getLogger(__name__)

POLL_S = 0.05  # how often the accept loop looks at the stop flag
_MAX_BODY_BYTES = 64 * 1024
_REDACT = re.compile(r"(access_token|secret|ticket)=([^&\s\"']{0,4})[^&\s\"']*")

Answer = Callable[[SandboxState, dict[str, str]], dict[str, object]]


def _agent_ticket_type(given: str | None) -> str | None:
    """ticket/get serves only ``type=agent_config``; anything else gets WeCom's 40058."""
    return given if given == "agent_config" else None


#: GET path -> (endpoint name for faults, answer from the query).
_GET_ROUTES: dict[str, tuple[str, Answer]] = {
    "/cgi-bin/token": (
        "token",
        lambda s, q: s.classic_token(q.get("appid"), q.get("secret"), q.get("grant_type")),
    ),
    "/cgi-bin/getcallbackip": ("getcallbackip", lambda s, q: s.check(q.get("access_token"))),
    "/cgi-bin/ticket/getticket": (
        "getticket",
        lambda s, q: s.ticket(q.get("access_token"), q.get("type")),
    ),
    "/cgi-bin/gettoken": (
        "wecom_gettoken",
        lambda s, q: s.wecom_token(q.get("corpid"), q.get("corpsecret")),
    ),
    "/cgi-bin/get_jsapi_ticket": (
        "wecom_corp_ticket",
        lambda s, q: s.wecom_ticket(q.get("access_token"), "corp_jsapi"),
    ),
    "/cgi-bin/ticket/get": (
        "wecom_agent_ticket",
        lambda s, q: s.wecom_ticket(q.get("access_token"), _agent_ticket_type(q.get("type"))),
    ),
    "/cgi-bin/agent/get": (
        "wecom_agent_get",
        lambda s, q: s.wecom_agent_get(q.get("access_token"), q.get("agentid")),
    ),
}


#: Seconds an idle keep-alive connection stays open.
KEEP_ALIVE_IDLE_S = 30.0


class SandboxHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self, config: SandboxConfig, state: SandboxState, stopping: threading.Event
    ) -> None:
        self.state, self.stopping = state, stopping
        self.pusher: PlatformPusher | None = None  # set by SandboxServer
        # Keep-alive connections outlive a request: closing the server closes them too.
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__((config.host, config.port), _Handler)
        self.timeout = POLL_S

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def server_close(self) -> None:
        super().server_close()
        with self._open_lock:
            still_open = list(self._open)
        for connection in still_open:
            with contextlib.suppress(OSError):  # already closed by its client
                connection.shutdown(socket.SHUT_RDWR)  # its handler reads EOF and ends

    def server_bind(self) -> None:  # skip HTTPServer's getfqdn(), which may hit DNS
        TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), self.server_address[1]

    def handle_error(self, request: Any, client_address: Any) -> None:
        logger.debug("sandbox request from %s failed: %r", client_address, sys.exc_info()[1])


def _json_object(raw: bytes) -> dict[str, Any] | None:
    try:
        parsed = json.loads(raw)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError included
        return None
    return parsed if isinstance(parsed, dict) else None


class _Handler(BaseHTTPRequestHandler):
    server: SandboxHTTPServer
    server_version = "WeChatSandbox/1.0"
    # Keep-alive, as WeChat's servers do: HTTP/1.0 closed the connection after each
    # answer, so every call cost a TCP handshake and a new server thread. Every answer
    # has a Content-Length (`_send`); an idle connection is closed after `timeout`.
    protocol_version = "HTTP/1.1"
    timeout = KEEP_ALIVE_IDLE_S
    # The headers and the body go out in two writes: with Nagle's algorithm on, the body
    # waited for the client's delayed ACK (40 ms) on every kept-alive answer.
    disable_nagle_algorithm = True

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
        self._send(status, JSON, json.dumps(payload).encode())

    def _upstream(
        self, endpoint: str, params: dict[str, Any], answer: Callable[[], dict[str, object]]
    ) -> None:
        """Answer a WeChat/WeCom call, unless a fault hits it first."""
        state = self.server.state
        fault = state.take_fault(*state.owners(endpoint, params), endpoint=endpoint)
        if fault is not None and fault.mode == "timeout":
            if self.server.stopping.wait(fault.delay_s):
                self.close_connection = True  # stopping: drop the connection unanswered
                return
        elif fault is not None:
            caller_ip = str(self.client_address[0])
            self._send(*fault_reply(fault.mode, endpoint=endpoint, caller_ip=caller_ip))
            return
        self._send_json(200, answer())

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = {key: values[0] for key, values in parse_qs(url.query).items()}
        state = self.server.state
        route = _GET_ROUTES.get(url.path)
        if route is not None:
            endpoint, answer = route
            self._upstream(endpoint, query, lambda: answer(state, query))
        elif url.path == "/sandbox/stats":
            self._send_json(200, state.stats())
        elif url.path == "/sandbox/ticket":
            self._send_json(200, state.ticket_status(query.get("ticket", "")))
        else:
            self._send_json(404, {"error": f"unknown path {url.path}"})

    def do_POST(self) -> None:  # noqa: C901, PLR0912 - a routing table, as do_GET
        path, state = urlsplit(self.path).path, self.server.state
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= _MAX_BODY_BYTES:
            self._send_json(400, {"error": f"Content-Length must be 0..{_MAX_BODY_BYTES}"})
            return
        raw = self.rfile.read(length)
        parsed = _json_object(raw) or {}
        if path == "/cgi-bin/stable_token":
            self._upstream("stable_token", parsed, lambda: state.stable_token(raw))
        elif path == "/cgi-bin/clear_quota/v2":
            self._upstream("clear_quota", parsed, lambda: state.clear_quota(raw))
        elif path.startswith("/cgi-bin/component/"):
            self._component(path.removeprefix("/cgi-bin/component/"), raw, parsed)
        elif path.startswith("/sandbox/platform/"):
            self._platform_control(path.removeprefix("/sandbox/platform/"), parsed)
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
        elif path == "/sandbox/invalidate":
            owner = parsed.get("owner")
            if not isinstance(owner, str):
                self._send_json(400, {"error": "'owner' must be an appid or corp_id/agent_id"})
                return
            self._send_json(200, {"ok": state.invalidate(owner)})
        elif path == "/sandbox/verify_signature":
            self._verify_signature(parsed)
        else:
            self._send_json(404, {"error": f"unknown path {path}"})

    def _verify_signature(self, body: dict[str, Any]) -> None:
        names = ("owner", "ticket_type", "url", "noncestr", "timestamp", "signature")
        values = [body.get(name) for name in names]
        if set(body) != set(names) or not all(isinstance(v, str) for v in values):
            self._send_json(400, {"error": f"body must be a JSON object of strings {names}"})
            return
        valid = self.server.state.verify_signature(*(str(v) for v in values))
        self._send_json(200, {"valid": valid})

    def _component(self, name: str, raw: bytes, parsed: dict[str, Any]) -> None:
        """The open platform's component API (see `openplatform`)."""
        state = self.server.state
        query = {k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()}
        token = query.get("component_access_token")
        if name == "api_component_token":
            self._upstream("component_token", parsed, lambda: state.component_token(raw))
        elif name in _COMPONENT_CALLS:
            endpoint = _COMPONENT_CALLS[name]
            self._upstream(endpoint, parsed, lambda: state.component_call(endpoint, token, raw))
        elif name == "api_start_push_ticket":
            self._upstream("start_push_ticket", parsed, lambda: self._start_push_ticket(raw))
        else:
            self._send_json(404, {"error": f"unknown component API {name}"})

    def _start_push_ticket(self, raw: bytes) -> dict[str, object]:
        answer = self.server.state.start_push_ticket(raw)
        if answer.get("errcode") == 0 and self.server.pusher is not None:
            self.server.pusher.wake()
        return answer

    def _platform_control(self, name: str, body: dict[str, Any]) -> None:
        """``/sandbox/platform/{authorize,revoke,push_ticket,stop_pushes,seed}``."""
        state, pusher = self.server.state, self.server.pusher
        appid = body.get("component_appid")
        if not isinstance(appid, str) or not state.platform_known(appid):
            self._send_json(400, {"error": "'component_appid' must name a sandbox platform"})
            return
        if name in ("authorize", "revoke"):
            authorizer = body.get("authorizer_appid")
            if not isinstance(authorizer, str) or not _AUTHORIZER.fullmatch(authorizer):
                self._send_json(400, {"error": "'authorizer_appid' must be an appid"})
                return
            if name == "authorize":
                fields: dict[str, object] | None = state.authorize(appid, authorizer)
            else:
                fields = state.revoke(appid, authorizer)
            if fields is None:
                self._send_json(409, {"error": f"{authorizer} has not authorized {appid}"})
                return
            pushed = None if pusher is None else pusher.push_event(appid, fields)
            self._send_json(200, {"ok": True, "info_type": fields["InfoType"], "pushed": pushed})
        elif name == "push_ticket":
            pushed = None if pusher is None else pusher.push_ticket(appid)
            self._send_json(200, {"ok": True, "pushed": pushed})
        elif name == "stop_pushes":
            self._send_json(200, {"ok": state.stop_pushes(appid)})
        elif name == "seed":
            prefix, count = body.get("prefix", "wxseeded"), body.get("count")
            if not isinstance(prefix, str) or not re.fullmatch(r"[A-Za-z0-9_]{1,20}", prefix):
                self._send_json(400, {"error": "'prefix' must be 1-20 letters or digits"})
                return
            if type(count) is not int or not 1 <= count <= 100_000:
                self._send_json(400, {"error": "'count' must be an integer 1..100000"})
                return
            seeded = state.seed_authorizers(appid, prefix, count)
            self._send_json(200, {"ok": True, "authorizers": seeded})
        else:
            self._send_json(404, {"error": f"unknown platform control {name}"})


#: Component calls that take ``?component_access_token=``, by path: their endpoint name.
_COMPONENT_CALLS = {
    "api_query_auth": "query_auth",
    "api_authorizer_token": "authorizer_token",
    "api_get_authorizer_list": "authorizer_list",
}
_AUTHORIZER = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
