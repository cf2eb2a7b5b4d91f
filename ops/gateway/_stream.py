"""`GET /v1/stream?apps=...&kinds=...`: the held credentials, then every new one, pushed as
Server-Sent Events, each event's data the signed envelope exactly as the producer made it.
Without `apps` (or with `apps=*`), every app the API key may use, those that appear later
included.

    retry: 2000

    id: wx1234567890abcdef:access_token:1795476981006
    event: update
    data: {"payload":"{...the TokenUpdate JSON...}","key_id":"9f2c4e1a7b3d5c6e","sig":"..."}

    : heartbeat

An event's `id` is the stream's cursor: `app:kind:version` of every app and kind sent so far,
comma-separated. A client reconnecting with it as `Last-Event-ID` is sent only versions above
it (an app and kind missing from it, or a cursor that cannot be parsed, is sent in full:
resending is harmless, every reader keeps the highest version). Versions are the producer's,
so a cursor is good against any gateway, a relay's included.

A slow or stuck reader costs the gateway no memory and no one else any time: the hub marks
which (app, kind) a stream owes, never queues updates, and the stream's own task writes the
newest held update of each when it can (coalescing: a reader 30 s behind gets the newest
version, not a backlog). A write that does not complete within `write_timeout_s` drops the
stream. At most `max_per_key` streams per API key are open at once (429 beyond).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import QueryParams
from starlette.types import Message, Receive, Scope, Send

from consumer_lib import TokenKind, TokenUnavailable, TokenUpdate

from ._apikeys import ApiKey
from ._apikeys import Scope as KeyScope
from ._fastpath import authorization
from ._http import ApiError
from ._tokens import UnknownApp

if TYPE_CHECKING:
    from ._app import Gateway

#: The gateway's app id syntax (`_app.APP_ID`; repeated here to import nothing from it).
APP_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")

log = logging.getLogger(__name__)

Key = tuple[str, TokenKind]
#: At most this many apps (and kinds) in one stream's query.
MAX_APPS = 100
#: A `Last-Event-ID` longer than this is ignored (everything is sent).
MAX_CURSOR_CHARS = 16_384
#: What a client is told to wait before reconnecting (the SSE `retry:` field), in ms.
RETRY_MS = 2000
_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-store"),
    (b"x-accel-buffering", b"no"),
]


@dataclass(frozen=True)
class StreamLimits:
    """`WXTOKEN_GATEWAY_STREAM_*`: heartbeat period, streams per key, write timeout."""

    heartbeat_s: float = 15.0
    max_per_key: int = 20
    write_timeout_s: float = 30.0


def parse_cursor(text: str | None) -> dict[Key, int]:
    """The versions in a `Last-Event-ID`; an empty dict for none or anything malformed."""
    if not text or len(text) > MAX_CURSOR_CHARS:
        return {}
    versions: dict[Key, int] = {}
    for item in text.split(","):
        app_id, sep1, rest = item.partition(":")
        kind, sep2, version = rest.partition(":")
        if not (sep1 and sep2 and version.isdigit() and len(version) <= 20):
            return {}
        try:
            versions[(app_id, TokenKind(kind))] = int(version)
        except ValueError:
            return {}
    return versions


def format_cursor(versions: dict[Key, int]) -> str:
    return ",".join(f"{a}:{k.value}:{v}" for (a, k), v in sorted(versions.items()))


def event_bytes(body: bytes, cursor: str) -> bytes:
    """One SSE event carrying `body` unchanged (an envelope has no line break; were there
    one, each line is its own `data:` field, which SSE joins back with LF)."""
    data = b"".join(b"data: " + line + b"\n" for line in body.split(b"\n"))
    return b"id: " + cursor.encode() + b"\nevent: update\n" + data + b"\n"


@dataclass(eq=False)
class _Stream:
    """One open stream: what it wants, what it was sent, what it owes."""

    key: ApiKey
    kinds: frozenset[TokenKind]
    #: The (app, kind) asked for; None: every app the key may use (`apps` omitted or `*`),
    #: those that appear later included.
    wanted: frozenset[Key] | None
    sent: dict[Key, int]
    #: The (app, kind) with something newer to send: a set (ordered), never a queue.
    owed: dict[Key, None] = field(default_factory=dict)
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    def wants(self, key: Key) -> bool:
        if self.wanted is not None:
            return key in self.wanted
        return key[1] in self.kinds and self.key.may_use(key[0])

    def owe(self, key: Key) -> None:
        self.owed[key] = None
        self.wake.set()


class StreamHub:
    """Every open stream, and the newest signed update of every app and kind.

    Fed by `TokenClient.on_update` (the client's callback thread), which only records the
    newest (update, bytes) and asks the event loop to mark the streams that want it."""

    def __init__(
        self,
        gateway: Gateway,
        limits: StreamLimits,
        *,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._gw = gateway
        self.limits = limits
        self._clock = clock or gateway.clock
        self.latest: dict[Key, tuple[TokenUpdate, bytes]] = {}
        self._by_key: dict[Key, set[_Stream]] = {}
        self._every_app: set[_Stream] = set()
        self._open_per_key: dict[str, int] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        #: Streams dropped because their reader did not read (metrics).
        self.dropped_slow = 0
        gateway.client.on_update(self._on_update)

    @property
    def open_streams(self) -> int:
        return sum(self._open_per_key.values())

    # ------------------------------------------------------------ the feed
    def _on_update(self, update: TokenUpdate) -> None:
        """On the client's callback thread: keep the newest bytes, wake the loop."""
        held = self._gw.client.held_body(update.app_id, update.kind)
        if held is None:
            return  # arrived without bytes (not from a producer): nothing to pass on
        key = (update.app_id, update.kind)
        current = self.latest.get(key)
        if current is not None and current[0].version >= held[0].version:
            return
        self.latest[key] = held
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # closed meanwhile: no streams to tell
                loop.call_soon_threadsafe(self._mark, key)

    def _mark(self, key: Key) -> None:
        for stream in self._by_key.get(key, ()):
            stream.owe(key)
        for stream in self._every_app:
            if stream.wants(key):
                stream.owe(key)

    # ------------------------------------------------------------ the ASGI endpoint
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        stream = await self._admit(scope)
        self._loop = asyncio.get_running_loop()
        if stream.wanted is None:
            self._every_app.add(stream)
            first = sorted(k for k in self.latest if stream.wants(k))
        else:
            for key in stream.wanted:
                self._by_key.setdefault(key, set()).add(stream)
            first = sorted(stream.wanted)
        for key in first:
            stream.owe(key)
        try:
            await self._serve(stream, receive, send)
        finally:
            self._every_app.discard(stream)
            for key in stream.wanted or ():
                streams = self._by_key.get(key)
                if streams is not None:
                    streams.discard(stream)
                    if not streams:
                        del self._by_key[key]
            left = self._open_per_key[stream.key.name] - 1
            if left:
                self._open_per_key[stream.key.name] = left
            else:
                del self._open_per_key[stream.key.name]

    async def _admit(self, scope: Scope) -> _Stream:
        """The stream asked for, or `ApiError` before anything is streamed."""
        params = QueryParams(scope["query_string"])
        apps_param = params.get("apps", "*")
        apps = [] if apps_param == "*" else [a for a in apps_param.split(",") if a]
        kind_names = [k for k in params.get("kinds", TokenKind.ACCESS_TOKEN.value).split(",") if k]
        if not kind_names or (apps_param != "*" and not apps):
            raise ApiError(422, "empty apps or kinds: list them comma-separated, or omit apps")
        if len(apps) > MAX_APPS or len(kind_names) > len(TokenKind):
            raise ApiError(422, f"at most {MAX_APPS} apps and {len(TokenKind)} kinds per stream")
        kinds = []
        for name in kind_names:
            try:
                kinds.append(TokenKind(name))
            except ValueError:
                names = ", ".join(k.value for k in TokenKind)
                raise ApiError(404, f"no such kind: use one of {names}") from None
        # The first app's check authenticates and charges the rate limit once (no app for
        # "every app": the key's patterns then filter what is sent).
        key = self._gw.check(authorization(scope), KeyScope.READ, apps[0] if apps else None)
        for app_id in apps[1:]:
            if not APP_ID.match(app_id):
                raise ApiError(404, "no such app: app ids are 1-64 of A-Z a-z 0-9 _ . -")
            if not key.may_use(app_id):
                raise ApiError(403, f"key {key.name!r} may not use app {app_id!r}")
        wanted = frozenset((a, k) for a in apps for k in kinds) if apps else None
        for app_id, kind in sorted(wanted or ()):
            await self._known(app_id, kind)
        if self._open_per_key.get(key.name, 0) >= self.limits.max_per_key:
            raise ApiError(
                429,
                f"key {key.name!r} has {self.limits.max_per_key} streams open already",
                headers={"Retry-After": str(max(1, RETRY_MS // 1000))},
            )
        self._open_per_key[key.name] = self._open_per_key.get(key.name, 0) + 1
        stream = _Stream(key=key, kinds=frozenset(kinds), wanted=wanted, sent={})
        resumed = parse_cursor(_header(scope, b"last-event-id"))
        stream.sent.update((k, v) for k, v in resumed.items() if stream.wants(k))
        return stream

    async def _known(self, app_id: str, kind: TokenKind) -> None:
        """404 for an app and kind never held here nor stored; a known one without a valid
        token is fine (the stream sends it when it arrives)."""
        if (app_id, kind) in self.latest or self._gw.view.current(app_id, kind) is not None:
            return
        try:
            await run_in_threadpool(self._gw.view.resolve, app_id, kind)
        except UnknownApp as exc:
            raise ApiError(404, str(exc)) from None
        except TokenUnavailable:
            pass

    async def _serve(self, stream: _Stream, receive: Receive, send: Send) -> None:
        gone = asyncio.Event()

        async def watch_disconnect() -> None:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    gone.set()
                    stream.wake.set()
                    return

        watcher = asyncio.create_task(watch_disconnect())
        try:
            await self._write(
                send, {"type": "http.response.start", "status": 200, "headers": _HEADERS}
            )
            await self._write_body(send, b"retry: %d\n\n" % RETRY_MS)
            while not gone.is_set():
                while stream.owed and not gone.is_set():
                    key = next(iter(stream.owed))
                    del stream.owed[key]
                    event = self._event(stream, key)
                    if event is not None:
                        await self._write_body(send, event)
                stream.wake.clear()
                if stream.owed or gone.is_set():
                    continue
                try:
                    await asyncio.wait_for(stream.wake.wait(), self.limits.heartbeat_s)
                except TimeoutError:
                    await self._write_body(send, b": heartbeat\n\n")
        except TimeoutError:
            self.dropped_slow += 1
            log.warning(
                "dropped a stream of key %r: its reader took over %.0f s to take a write",
                stream.key.name,
                self.limits.write_timeout_s,
            )
        finally:
            watcher.cancel()

    def _event(self, stream: _Stream, key: Key) -> bytes | None:
        """The event for the newest held update of `key`, if newer than sent and valid."""
        held = self.latest.get(key)
        if held is None:
            return None
        update, body = held
        if update.version <= stream.sent.get(key, -1) or self._clock() >= update.expires_at:
            return None
        stream.sent[key] = update.version
        return event_bytes(body, format_cursor(stream.sent))

    async def _write(self, send: Send, message: Message) -> None:
        """`send`, or `TimeoutError` when the reader has not taken it in time."""
        await asyncio.wait_for(send(message), self.limits.write_timeout_s)

    async def _write_body(self, send: Send, data: bytes) -> None:
        await self._write(send, {"type": "http.response.body", "body": data, "more_body": True})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            text: str = value.decode("latin-1")
            return text
    return None
