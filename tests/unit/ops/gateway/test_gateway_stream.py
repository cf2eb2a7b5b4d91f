"""`GET /v1/stream` in-process: the ASGI app driven by hand (an endless response), a fake
TokenClient, a fake clock. Auth, filtering, the exact bytes, resume, heartbeats, the per-key
bound, and a reader that does not read (coalescing, then dropped)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from consumer_lib import TokenKind, TokenUnavailable, TokenUpdate
from consumer_lib.testing import PLAIN, stub_client
from ops.gateway import KeyRing, add_key
from ops.gateway._app import Gateway
from ops.gateway._ratelimit import RateLimiter
from ops.gateway._routes import build_app
from ops.gateway._stream import StreamLimits, format_cursor, parse_cursor
from ops.gateway._tokens import TokenView
from tests.conftest import FakeClock
from tests.unit._helpers import make_update

APP, APP2, OTHER = "wxapp1", "wxapp2", "other1"
TICK = TokenKind.JSAPI_TICKET
#: Generous: a condition the test waits for, never a timing threshold.
WAIT_S = 10.0


def envelope(update: TokenUpdate) -> bytes:
    """Bytes standing for a producer's signed envelope (the stream passes them on as they
    are; the integration test checks real signatures)."""
    return json.dumps(
        {"payload": update.encode().decode(), "key_id": "0" * 16, "sig": "c2ln"},
        separators=(",", ":"),
    ).encode()


class FakeClient:
    """What the gateway uses of TokenClient; validity by the test's clock."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.callbacks: list[Callable[[TokenUpdate], None]] = []
        self.bodies: dict[tuple[str, TokenKind], tuple[TokenUpdate, bytes]] = {}
        self.connected = True

    def on_update(self, callback: Callable[[TokenUpdate], None]) -> None:
        self.callbacks.append(callback)

    def push(self, update: TokenUpdate) -> bytes:
        body = envelope(update)
        self.bodies[(update.app_id, update.kind)] = (update, body)
        for callback in self.callbacks:
            callback(update)
        return body

    def held_body(self, app_id: str, kind: TokenKind) -> tuple[TokenUpdate, bytes] | None:
        return self.bodies.get((app_id, kind))

    def resolve_app_id(self, app_id: str) -> str:
        return (
            app_id  # no platform credentials here (tests/unit/consumer_lib/test_platform_app_ids)
        )

    def held_until(self, app_id: str, kind: TokenKind) -> tuple[TokenUpdate, float] | None:
        held = self.bodies.get((app_id, kind))
        if held is None or not held[0].is_valid_at(self.clock()):
            return None
        return held[0], held[0].expires_at

    def valid_count(self) -> int:
        return sum(1 for u, _ in self.bodies.values() if u.is_valid_at(self.clock()))

    def get(self, app_id: str, timeout: float = 5.0, *, kind: TokenKind) -> TokenUpdate:
        raise TokenUnavailable("none held")


class Conn:
    """One HTTP exchange with the ASGI app: what it sent, and a reader that can stall."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.changed = asyncio.Event()
        self.gone = asyncio.Event()
        #: Cleared: the reader takes nothing (a stuck client); `send` waits.
        self.reading = asyncio.Event()
        self.reading.set()

    async def receive(self) -> dict[str, Any]:
        if not hasattr(self, "_asked"):
            self._asked = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        await self.reading.wait()
        self.messages.append(message)
        self.changed.set()

    @property
    def status(self) -> int | None:
        starts = [m for m in self.messages if m["type"] == "http.response.start"]
        return starts[0]["status"] if starts else None

    @property
    def text(self) -> str:
        return b"".join(
            m.get("body", b"") for m in self.messages if m["type"] == "http.response.body"
        ).decode()

    def events(self) -> list[dict[str, str]]:
        """The complete events with data, as {"id", "event", "data"}."""
        found = []
        for block in self.text.split("\n\n"):
            fields: dict[str, str] = {}
            for line in block.split("\n"):
                name, _, value = line.partition(": ")
                if name in ("id", "event"):
                    fields[name] = value
                elif name == "data":
                    fields["data"] = fields["data"] + "\n" + value if "data" in fields else value
            if "data" in fields:
                found.append(fields)
        return found

    async def until(self, condition: Callable[[], bool]) -> None:
        async def loop() -> None:
            while not condition():
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(loop(), WAIT_S)


class Harness:
    def __init__(self, tmp_path: Path, clock: FakeClock, limits: StreamLimits) -> None:
        self.clock = clock
        self.client = FakeClient(clock)
        self.known = [(a, k) for a in (APP, APP2) for k in (TokenKind.ACCESS_TOKEN, TICK)]
        path = tmp_path / "keys.json"
        self.keys = {
            "all": add_key(path, "all", apps=["wx*"], scopes=["read", "report"]),
            "one": add_key(path, "one", apps=[APP], scopes=["read"]),
            "reporter": add_key(path, "reporter", apps=["wx*"], scopes=["report"]),
        }
        self.view = TokenView(self.client, lambda: self.known, clock=clock)  # type: ignore[arg-type]
        self.gateway = Gateway(
            client=self.client,  # type: ignore[arg-type]
            view=self.view,
            keys=KeyRing(path),
            clock=clock,
            limiter=RateLimiter(clock=clock),
            stream_limits=limits,
        )
        self.app = build_app(self.gateway, start_client=False)
        self.tasks: list[asyncio.Task[None]] = []

    def open(
        self, query: str, role: str = "all", last_event_id: str | None = None
    ) -> tuple[Conn, asyncio.Task[None]]:
        conn = Conn()
        headers = [(b"authorization", f"Bearer {self.keys[role]}".encode())]
        if last_event_id is not None:
            headers.append((b"last-event-id", last_event_id.encode()))
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": "/v1/stream",
            "raw_path": b"/v1/stream",
            "root_path": "",
            "query_string": query.encode(),
            "headers": headers,
            "client": ("127.0.0.1", 1234),
            "server": ("127.0.0.1", 8777),
        }
        task = asyncio.create_task(self.app(scope, conn.receive, conn.send))  # type: ignore[arg-type]
        self.tasks.append(task)
        return conn, task

    async def refused(self, query: str, role: str = "all") -> tuple[int, dict[str, Any]]:
        conn, task = self.open(query, role)
        await asyncio.wait_for(task, WAIT_S)
        return conn.status or 0, json.loads(conn.text)

    async def close_all(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


def run(
    tmp_path: Path,
    clock: FakeClock,
    body: Callable[[Harness], Awaitable[None]],
    limits: StreamLimits | None = None,
) -> None:
    async def main() -> None:
        harness = Harness(tmp_path, clock, limits or StreamLimits(heartbeat_s=3600))
        try:
            await body(harness)
        finally:
            await harness.close_all()

    asyncio.run(main())


def test_current_then_every_new_update_as_the_exact_bytes(tmp_path: Path, clock: FakeClock) -> None:
    """The held token first, then each new one; data is the envelope byte for byte, with
    an id naming app, kind and version."""

    async def body(h: Harness) -> None:
        first = h.client.push(make_update(app_id=APP, version=5))
        conn, _ = h.open(f"apps={APP}")
        await conn.until(lambda: len(conn.events()) == 1)
        assert conn.status == 200
        start = conn.messages[0]
        assert (b"content-type", b"text/event-stream; charset=utf-8") in start["headers"]
        assert conn.events()[0] == {
            "id": f"{APP}:access_token:5",
            "event": "update",
            "data": first.decode(),
        }
        second = h.client.push(make_update(app_id=APP, version=6, value="TOKEN-" + "b" * 30))
        await conn.until(lambda: len(conn.events()) == 2)
        assert conn.events()[1]["data"].encode() == second
        assert conn.events()[1]["id"] == f"{APP}:access_token:6"

    run(tmp_path, clock, body)


def test_only_the_apps_and_kinds_asked_for(tmp_path: Path, clock: FakeClock) -> None:
    """Other apps and kinds are not sent; the cursor covers every app and kind sent."""

    async def body(h: Harness) -> None:
        conn, _ = h.open(f"apps={APP},{APP2}&kinds=access_token,jsapi_ticket")
        await conn.until(lambda: conn.status == 200)
        h.client.push(make_update(app_id="wxapp3", version=1))
        h.client.push(make_update(app_id=APP2, version=2, kind=TokenKind.WX_CARD_TICKET))
        h.client.push(make_update(app_id=APP, version=3, kind=TICK))
        h.client.push(make_update(app_id=APP2, version=4))
        await conn.until(lambda: len(conn.events()) == 2)
        assert [e["id"] for e in conn.events()] == [
            f"{APP}:jsapi_ticket:3",
            f"{APP}:jsapi_ticket:3,{APP2}:access_token:4",
        ]

    run(tmp_path, clock, body)


def test_refusals_before_streaming(tmp_path: Path, clock: FakeClock) -> None:
    """401/403/404/422 as JSON before any event: no key scope, an app the key may not use,
    an unknown app or kind, no apps."""

    async def body(h: Harness) -> None:
        h.client.push(make_update(app_id=APP, version=1))
        assert (await h.refused(f"apps={APP}", role="reporter"))[0] == 403
        status, answer = await h.refused(f"apps={APP},{APP2}", role="one")
        assert (status, answer["error"]) == (403, "forbidden")
        assert "wxapp2" in answer["reason"]
        assert (await h.refused(f"apps={APP},wxnever"))[0] == 404
        assert (await h.refused(f"apps={APP},bad/app"))[0] == 404
        assert (await h.refused(f"apps={APP2}&kinds=wx_card_ticket"))[0] == 404
        assert (await h.refused(f"apps={APP}&kinds=nope"))[0] == 404
        assert (await h.refused("apps="))[0] == 422
        assert (await h.refused(f"apps={APP}&kinds="))[0] == 422
        conn, task = h.open(f"apps={APP}")
        await conn.until(lambda: len(conn.events()) == 1)
        assert not task.done()

    run(tmp_path, clock, body)


def test_every_app_the_key_may_use_without_apps(tmp_path: Path, clock: FakeClock) -> None:
    """No `apps` (or `*`): the held apps the key's patterns allow, and apps that appear
    later; never another key's apps or a kind not asked for."""

    async def body(h: Harness) -> None:
        h.client.push(make_update(app_id=APP, version=1))
        h.client.push(make_update(app_id=OTHER, version=2))
        one, _ = h.open("", role="one")
        every, _ = h.open("apps=*&kinds=access_token,jsapi_ticket")
        await one.until(lambda: len(one.events()) == 1)
        await every.until(lambda: len(every.events()) == 1)
        h.client.push(make_update(app_id=APP2, version=3))  # new: not the key "one"'s
        h.client.push(make_update(app_id=APP2, version=4, kind=TICK))
        h.client.push(make_update(app_id=APP2, version=5, kind=TokenKind.WX_CARD_TICKET))
        h.client.push(make_update(app_id=APP, version=6))
        await one.until(lambda: len(one.events()) == 2)
        await every.until(lambda: len(every.events()) == 4)
        assert [e["id"] for e in one.events()] == [
            f"{APP}:access_token:1",
            f"{APP}:access_token:6",
        ]
        assert every.events()[-1]["id"] == (
            f"{APP}:access_token:6,{APP2}:access_token:3,{APP2}:jsapi_ticket:4"
        )
        assert all(OTHER not in e["id"] for e in every.events())

    run(tmp_path, clock, body)


def test_unauthenticated_is_401(tmp_path: Path, clock: FakeClock) -> None:
    async def body(h: Harness) -> None:
        h.keys["all"] = "wxgw_" + "x" * 43
        status, answer = await h.refused(f"apps={APP}")
        assert (status, answer["error"]) == (401, "unauthorized")

    run(tmp_path, clock, body)


def test_known_app_without_a_token_yet_streams_it_when_it_comes(
    tmp_path: Path, clock: FakeClock
) -> None:
    async def body(h: Harness) -> None:
        conn, _ = h.open(f"apps={APP2}")
        await conn.until(lambda: conn.status == 200)
        h.client.push(make_update(app_id=APP2, version=9))
        await conn.until(lambda: len(conn.events()) == 1)

    run(tmp_path, clock, body)


def test_resume_sends_only_newer_versions(tmp_path: Path, clock: FakeClock) -> None:
    """With Last-Event-ID, what the client has is not sent again; what it lacks is; a
    cursor that cannot be parsed means "send everything"."""

    async def body(h: Harness) -> None:
        h.client.push(make_update(app_id=APP, version=5))
        h.client.push(make_update(app_id=APP2, version=8))
        conn, _ = h.open(f"apps={APP},{APP2}", last_event_id=f"{APP}:access_token:5")
        await conn.until(lambda: len(conn.events()) == 1)
        assert conn.events()[0]["id"] == f"{APP}:access_token:5,{APP2}:access_token:8"
        h.client.push(make_update(app_id=APP, version=6))
        await conn.until(lambda: len(conn.events()) == 2)
        assert conn.events()[1]["id"] == f"{APP}:access_token:6,{APP2}:access_token:8"
        garbled, _ = h.open(f"apps={APP},{APP2}", last_event_id="garbage")
        await garbled.until(lambda: len(garbled.events()) == 2)

    run(tmp_path, clock, body)


def test_cursor_round_trip_and_garbage() -> None:
    versions = {(APP, TokenKind.ACCESS_TOKEN): 5, (APP2, TICK): 7}
    assert parse_cursor(format_cursor(versions)) == versions
    for bad in ["", "x", f"{APP}:access_token:", f"{APP}:nope:3", f"{APP}:access_token:-1"]:
        assert parse_cursor(bad) == {}
    assert parse_cursor("a:access_token:1," * 5000) == {}


def test_expired_token_is_not_sent(tmp_path: Path, clock: FakeClock) -> None:
    async def body(h: Harness) -> None:
        h.client.push(make_update(app_id=APP, version=1, lifetime_s=60))
        clock.advance(60)
        conn, _ = h.open(f"apps={APP}")
        await conn.until(lambda: conn.status == 200)
        h.client.push(make_update(app_id=APP, version=2, issued_at=clock.now_s))
        await conn.until(lambda: len(conn.events()) == 1)
        assert conn.events()[0]["id"] == f"{APP}:access_token:2"

    run(tmp_path, clock, body)


def test_heartbeat_comments_on_an_idle_stream(tmp_path: Path, clock: FakeClock) -> None:
    async def body(h: Harness) -> None:
        conn, _ = h.open(f"apps={APP}")
        await conn.until(lambda: conn.text.count(": heartbeat\n\n") >= 2)
        assert conn.text.startswith("retry: 2000\n\n")

    run(tmp_path, clock, body, StreamLimits(heartbeat_s=0.01))


def test_streams_per_key_are_bounded(tmp_path: Path, clock: FakeClock) -> None:
    """Beyond `max_per_key` open streams: 429; a closed stream frees its place."""

    async def body(h: Harness) -> None:
        h.client.push(make_update(app_id=APP, version=1))
        first, task = h.open(f"apps={APP}")
        second, _ = h.open(f"apps={APP}")
        await first.until(lambda: len(first.events()) == 1)
        await second.until(lambda: len(second.events()) == 1)
        status, answer = await h.refused(f"apps={APP}")
        assert (status, answer["error"]) == (429, "rate_limited")
        other, _ = h.open(f"apps={APP}", role="one")  # another key has its own bound
        await other.until(lambda: len(other.events()) == 1)
        first.gone.set()
        await asyncio.wait_for(task, WAIT_S)
        third, _ = h.open(f"apps={APP}")
        await third.until(lambda: len(third.events()) == 1)

    run(tmp_path, clock, body, StreamLimits(heartbeat_s=3600, max_per_key=2))


def test_a_stuck_reader_delays_no_one_and_gets_the_newest_not_a_backlog(
    tmp_path: Path, clock: FakeClock
) -> None:
    """A reader that takes nothing: others get every update at once; when it reads again it
    gets the newest version of each app only (the hub holds one mark per app and kind)."""

    async def body(h: Harness) -> None:
        h.client.push(make_update(app_id=APP, version=1))
        slow, _ = h.open(f"apps={APP}")
        fast, _ = h.open(f"apps={APP}", role="one")
        await slow.until(lambda: len(slow.events()) == 1)
        slow.reading.clear()
        h.client.push(make_update(app_id=APP, version=2))  # the slow stream's write waits
        await fast.until(lambda: len(fast.events()) == 2)
        for version in range(3, 103):
            h.client.push(make_update(app_id=APP, version=version))
            await fast.until(lambda v=version: len(fast.events()) == v)  # type: ignore[misc]
        slow.reading.set()
        await slow.until(lambda: slow.events()[-1]["id"] == f"{APP}:access_token:102")
        assert [e["id"].rsplit(":", 1)[1] for e in slow.events()] == ["1", "2", "102"]

    run(tmp_path, clock, body)


def test_a_reader_that_never_reads_is_dropped(tmp_path: Path, clock: FakeClock) -> None:
    async def body(h: Harness) -> None:
        h.client.push(make_update(app_id=APP, version=1))
        stuck, task = h.open(f"apps={APP}")
        await stuck.until(lambda: len(stuck.events()) == 1)
        stuck.reading.clear()
        h.client.push(make_update(app_id=APP, version=2))
        await asyncio.wait_for(task, WAIT_S)  # dropped: the endpoint returned
        again, _ = h.open(f"apps={APP}")  # its place is free (limit 1)
        await again.until(lambda: len(again.events()) == 1)

    run(tmp_path, clock, body, StreamLimits(heartbeat_s=3600, write_timeout_s=0.05, max_per_key=1))


def test_an_update_callback_finds_the_exact_bytes_it_came_in() -> None:
    """`TokenClient.held_body`, from an `on_update` callback: the update and the bytes it
    arrived as (remembered before any callback runs; the stream passes them on)."""
    client, stub = stub_client()
    seen: list[tuple[TokenUpdate, bytes] | None] = []
    client.on_update(lambda u: seen.append(client.held_body(u.app_id, u.kind)))
    with client:
        update = make_update(app_id=APP, version=3, issued_at=time.time(), lifetime_s=600)
        body = b" " + PLAIN.encode(update)  # any exact bytes the codec accepts
        stub.push_raw(body)
        assert stub.wait_callbacks()
    assert seen == [(update, body)]
    assert client.held_body(APP2) is None
