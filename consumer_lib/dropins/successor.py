"""After WeChat rejects a token: report it and wait for the one that replaces it.

A drop-in that got errcode 40001, 40014 or 42001 must not fetch a token itself (that would
invalidate everyone else's): it reports the rejected token (`TokenClient.report_invalid`)
and waits until the client holds a different one, pushed by the producer.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable

from .._client.client import TokenClient
from ..errors import TokenUnavailable
from ..wire.update import TokenKind, TokenUpdate

#: WeChat's "this token is invalid / not the latest / expired" errcodes.
INVALID_TOKEN_ERRCODES = frozenset({40001, 40014, 42001})
#: How long a drop-in waits for the successor by default.
DEFAULT_SUCCESSOR_TIMEOUT_S = 10.0


def errcode_of(body: bytes) -> int | None:
    """WeChat's errcode in a JSON answer, or None (not JSON, no errcode, not a number)."""
    if not body.lstrip().startswith(b"{"):
        return None
    try:
        answer = json.loads(body)
    except ValueError:
        return None
    errcode = answer.get("errcode") if isinstance(answer, dict) else None
    if isinstance(errcode, int) and not isinstance(errcode, bool):
        return errcode
    if isinstance(errcode, str) and errcode.lstrip("-").isdigit():
        return int(errcode)
    return None


class Successors:
    """Waits for a token other than a rejected one; one per `TokenClient` is enough."""

    def __init__(
        self, tokens: TokenClient, *, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self.tokens = tokens
        self._monotonic = monotonic
        self._changed = threading.Condition()
        tokens.on_update(self._on_update)

    def _on_update(self, update: TokenUpdate) -> None:
        with self._changed:
            self._changed.notify_all()

    def replace(
        self,
        app_id: str,
        rejected: str,
        *,
        errcode: int,
        kind: TokenKind = TokenKind.ACCESS_TOKEN,
        timeout_s: float = DEFAULT_SUCCESSOR_TIMEOUT_S,
    ) -> str:
        """Report `rejected` and return its successor; `TokenUnavailable` after `timeout_s`."""
        self.tokens.report_invalid(app_id, rejected, kind=kind, reason=f"errcode {errcode}")
        deadline = self._monotonic() + timeout_s
        with self._changed:
            while True:
                left_s = deadline - self._monotonic()
                try:
                    current = self.tokens.get_token(app_id, timeout=max(0.0, left_s), kind=kind)
                except TokenUnavailable:
                    current = None
                if current is not None and current != rejected:
                    return current
                left_s = deadline - self._monotonic()
                if left_s <= 0:
                    raise TokenUnavailable(
                        f"WeChat rejected the {kind} of {app_id} (errcode {errcode}) and no "
                        f"successor arrived within {timeout_s:g} s"
                    )
                self._changed.wait(min(left_s, 1.0))


class TokenRetry:
    """Shared by the HTTP drop-ins: the current token, and the successor of a rejected one."""

    def __init__(
        self,
        tokens: TokenClient,
        app_id: str,
        *,
        token_timeout_s: float = 5.0,
        successor_timeout_s: float = DEFAULT_SUCCESSOR_TIMEOUT_S,
        successors: Successors | None = None,
    ) -> None:
        self.tokens = tokens
        self.app_id = app_id
        self._token_timeout_s = token_timeout_s
        self._successor_timeout_s = successor_timeout_s
        self._successors = successors or Successors(tokens)

    def _current(self) -> str:
        return self.tokens.get_token(self.app_id, timeout=self._token_timeout_s)

    def _successor(self, rejected: str, errcode: int) -> str | None:
        try:
            return self._successors.replace(
                self.app_id, rejected, errcode=errcode, timeout_s=self._successor_timeout_s
            )
        except TokenUnavailable:
            return None
