"""The hot path: `GET /v1/apps/{app}/{kind}` answered in raw ASGI, before Starlette.

When the token is held and the key may read it, the answer is sent at once (about half
of Starlette's per-request cost is routing, `Request`, middleware and `Response` objects).
Anything else (an error, a miss, another route) goes to the Starlette app unchanged,
which answers it the one documented way; the rate limit is charged only on success, so a
request passed on is never charged twice. Every answer's status is counted (metrics).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from consumer_lib import TokenKind

from ._apikeys import Scope as KeyScope
from ._http import ApiError

if TYPE_CHECKING:
    from ._app import Gateway

_PREFIX = "/v1/apps/"


def authorization(scope: Scope) -> str | None:
    """The Authorization header, read from the raw ASGI headers (no `Headers` built)."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            text: str = value.decode("latin-1")
            return text
    return None


class FastReads:
    def __init__(self, app: ASGIApp, gateway: Gateway, kinds: dict[str, TokenKind]) -> None:
        self.app = app
        self._gw = gateway
        self._kinds = kinds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            path: str = scope["path"]
            if path.startswith(_PREFIX):
                app_id, _, segment = path[len(_PREFIX) :].partition("/")
                kind = self._kinds.get(segment)
                if kind is not None and await self._answer(scope, send, app_id, kind):
                    self._gw.count_response(200)
                    return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        count = self._gw.count_response

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                count(message["status"])
            await send(message)

        await self.app(scope, receive, counting_send)

    async def _answer(self, scope: Scope, send: Send, app_id: str, kind: TokenKind) -> bool:
        gw = self._gw
        held = gw.view.current(app_id, kind)
        if held is None:
            return False
        try:
            gw.check(authorization(scope), KeyScope.READ, app_id)
        except ApiError:
            return False
        body = gw.token_body(*held)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"cache-control", b"no-store"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
        return True
