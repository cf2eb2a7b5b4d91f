"""Testing a service that uses `TokenClient`, without RabbitMQ or Redis.

    from consumer_lib.testing import stub_client

    def test_my_service_uses_the_pushed_token() -> None:
        tokens, stub = stub_client()
        stub.push_token("wx1234567890abcdef", "TOKEN-for-the-test")
        assert my_service(tokens).call_wechat() == ...
        assert stub.wait_callbacks()          # my_service's on_update callbacks have run
        [request] = stub.requests            # what tokens.report_invalid() sent
        assert request.app_id == "wx1234567890abcdef"

`StubTransport` stands in for the client's broker thread: `push(update)` and
`push_raw(bytes)` deliver a message as the broker would. When `push` returns the client
holds the update (`get_token` serves it), but its `on_update` callbacks run as in
production: on the client's callback thread, never the test's. `wait_callbacks()` waits
until they have run for everything pushed so far. Every refresh request the client sends
is kept in `requests`. `stub_client()` builds a client around one, with an
empty Redis stand-in (the snapshot holds nothing) unless a Redis client is given.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import Any, cast

import redis

from ._client.client import TokenClient
from .settings import ClientSettings
from .transport import OnBody
from .wire.refresh_request import REQUEST_MESSAGE_TYPE, RefreshRequest
from .wire.signing import PLAIN, UpdateCodec
from .wire.update import TokenKind, TokenSource, TokenUpdate

__all__ = ["EmptyRedis", "StubTransport", "stub_client"]


class StubTransport:
    """A transport a test pushes updates through and reads refresh requests from."""

    def __init__(self, *, connected: bool = True, clock: Callable[[], float] = time.time) -> None:
        #: Set to False to act as if the broker were unreachable (`send` then fails).
        self.is_connected = connected
        self.last_error: str | None = None
        #: Set to a reason to act as if the broker refused the login.
        self.login_refused: str | None = None
        #: Every `(exchange, body, message_type)` the client sent.
        self.sent: list[tuple[str, bytes, str]] = []
        self.started = False
        self.closed = False
        self._clock = clock
        self._versions = itertools.count(1)
        self._on_body: OnBody | None = None
        self._read_snapshot: Callable[[], None] = lambda: None
        self._callbacks_idle: Callable[[float], bool] | None = None

    # ------------------------------------------------------------ for the test
    def push(
        self,
        update: TokenUpdate,
        *,
        codec: UpdateCodec = PLAIN,
        user_id: str | None = None,
        sent_s: float | None = None,
    ) -> None:
        """Deliver `update` as the broker would, encoded with `codec` (sign it with a
        `UpdateCodec(signer=...)` when the client verifies signatures), from `user_id`
        (the broker-checked publisher, for `WXTOKEN_TRUSTED_PUBLISHERS`), with the send
        time `sent_s` in its header (None: no header)."""
        self.push_raw(codec.encode(update), user_id=user_id, sent_s=sent_s)

    def push_raw(
        self, body: bytes, *, user_id: str | None = None, sent_s: float | None = None
    ) -> None:
        """Deliver any bytes, as a message on the exchange (with the send time `sent_s` in
        its header): garbage is counted, not raised."""
        if self._on_body is None:
            raise RuntimeError("StubTransport is not attached to a TokenClient")
        self._on_body(body, user_id, sent_s)

    def push_token(
        self,
        app_id: str,
        token: str,
        *,
        expires_in_s: float = 7200.0,
        kind: TokenKind = TokenKind.ACCESS_TOKEN,
        user_id: str | None = None,
    ) -> TokenUpdate:
        """Push `token` for `app_id`, valid `expires_in_s` from now, newer than any pushed
        before by this stub; returns the update."""
        now_s = self._clock()
        update = TokenUpdate(
            app_id=app_id,
            kind=kind,
            value=token,
            issued_at=now_s,
            expires_at=now_s + expires_in_s,
            version=next(self._versions),
            source=TokenSource.REFRESH,
            producer_id="consumer_lib.testing",
        )
        self.push(update, user_id=user_id)
        return update

    def wait_callbacks(self, timeout_s: float = 5.0) -> bool:
        """Wait until the client's `on_update` callbacks have run for every update pushed
        so far (True), or `timeout_s` passed (False). They run on the client's callback
        thread, so a test checks what they did only after this."""
        if self._callbacks_idle is None:
            raise RuntimeError("StubTransport is not attached to a TokenClient")
        return self._callbacks_idle(timeout_s)

    def read_snapshot(self) -> None:
        """Make the client read the snapshot now, as the thread does on (re)connect."""
        self._read_snapshot()

    @property
    def requests(self) -> list[RefreshRequest]:
        """The refresh requests sent (`TokenClient.report_invalid`), decoded."""
        return [
            RefreshRequest.decode(body)
            for _, body, message_type in self.sent
            if message_type == REQUEST_MESSAGE_TYPE
        ]

    # ------------------------------------------------------------ the transport
    def attach(
        self,
        *,
        on_body: OnBody,
        read_snapshot: Callable[[], None],
        snapshot_wanted: Callable[[], bool],
        callbacks_idle: Callable[[float], bool],
    ) -> None:
        del snapshot_wanted
        self._on_body = on_body
        self._read_snapshot = read_snapshot
        self._callbacks_idle = callbacks_idle

    @property
    def connected(self) -> bool:
        return self.is_connected

    def start(self) -> StubTransport:
        self.started = True
        return self

    def close(self) -> None:
        self.closed = True

    def wait_connected(self, timeout_s: float) -> bool:
        del timeout_s
        return self.is_connected

    def send(self, exchange: str, body: bytes, message_type: str) -> bool:
        if not self.is_connected:
            return False
        self.sent.append((exchange, body, message_type))
        return True


class EmptyRedis:
    """Just enough of a Redis client for `TokenClient`: the snapshot holds nothing."""

    def get(self, key: object) -> None:
        del key

    def mget(self, keys: list[Any]) -> list[None]:
        return [None for _ in keys]

    def smembers(self, key: object) -> set[bytes]:
        del key
        return set()

    def pipeline(self, transaction: bool = True) -> _EmptyPipeline:
        del transaction
        return _EmptyPipeline()

    def close(self) -> None:
        """Nothing to close."""


class _EmptyPipeline:
    """The snapshot reader's one pipeline (MGET and a PTTL per key) on `EmptyRedis`."""

    def __init__(self) -> None:
        self._replies: list[Any] = []

    def mget(self, keys: list[Any]) -> None:
        self._replies.append([None for _ in keys])

    def pttl(self, key: object) -> None:
        del key
        self._replies.append(-2)

    def execute(self) -> list[Any]:
        return self._replies


def stub_client(
    settings: ClientSettings | None = None,
    *,
    redis_client: redis.Redis | None = None,
    clock: Callable[[], float] = time.time,
) -> tuple[TokenClient, StubTransport]:
    """A `TokenClient` fed by a new `StubTransport`, and the stub. Without `settings` it
    accepts unsigned updates; without `redis_client` the snapshot is empty."""
    transport = StubTransport(clock=clock)
    client = TokenClient(
        settings or ClientSettings(insecure_accept_unsigned=True),
        redis_client=redis_client or cast(redis.Redis, EmptyRedis()),
        clock=clock,
        transport=transport,
    )
    return client, transport
