"""What `TokenClient` needs from whatever brings it updates: the `Transport` contract.

Every transport enters the client the same way: built first, then `attach`ed, which hands
it `on_body` (each message, on the transport's thread), `read_snapshot`,
`snapshot_wanted` and `callbacks_idle(timeout_s)` (waits until the client's callback
thread has run every `on_update` callback of the updates accepted so far: True, or the
time is up: False). The broker `Subscriber` (the default), the gateway's HTTP
`GatewayStream` (`TokenClient.over_http`) and `consumer_lib.testing.StubTransport` all
do; a transport of your own passed as `TokenClient(transport=...)` does too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

from .wire.update import TokenKind

__all__ = ["AttachableTransport", "OnBody", "TokenReportingTransport", "Transport"]

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
