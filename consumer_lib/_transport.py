"""What `TokenClient` needs from whatever brings it updates: the `Transport` protocol.

The default transport is the `Subscriber` thread (RabbitMQ); `consumer_lib.testing`
ships `StubTransport` for a service's own tests. A transport passed to `TokenClient` is
first `attach`ed: it is given the three callbacks the subscriber gets at construction, and
`callbacks_idle(timeout_s)`, which waits until the client's callback thread has run every
`on_update` callback of the updates accepted so far (True) or the time is up (False).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

from .wire.update import TokenKind

#: A message body, its broker-checked `user_id` (None when unknown) and the send time
#: from its unsigned header (None when absent).
OnBody = Callable[[bytes, "str | None", "float | None"], None]


class Transport(Protocol):
    """The background side of a `TokenClient`."""

    @property
    def connected(self) -> bool: ...

    @property
    def last_error(self) -> str | None: ...

    @property
    def login_refused(self) -> str | None:
        """Why the broker refuses our login (a configuration error); None otherwise."""
        ...

    def start(self) -> object: ...

    def close(self) -> None: ...

    def wait_connected(self, timeout_s: float) -> bool: ...

    def send(self, exchange: str, body: bytes, message_type: str) -> bool: ...


class AttachableTransport(Transport, Protocol):
    """A transport built before the client that will use it."""

    def attach(
        self,
        *,
        on_body: OnBody,
        read_snapshot: Callable[[], None],
        snapshot_wanted: Callable[[], bool],
        callbacks_idle: Callable[[float], bool],
    ) -> None: ...


@runtime_checkable
class TokenReportingTransport(Protocol):
    """A transport with no broker to send refresh requests on (a gateway's stream): it
    reports a refused token itself, to whoever can refresh it (True when accepted)."""

    def report_token(
        self, app_id: str, token: str, kind: TokenKind, reason: str | None
    ) -> bool: ...
