"""Encoding each held update once: a codec that remembers the bytes of the latest update
per app and kind.

The leader re-publishes every token every interval and, on taking over, all of them at
once; each publish used to sign the same payload again. Ed25519 signatures are
deterministic, so the bytes of an update never change: this codec keeps, per app and kind,
the latest update it encoded or decoded with its exact bytes, and hands those back when
the same update is encoded again. What a standby decoded from Redis is therefore published
at takeover without being signed again. One entry per app and kind: memory grows with the
fleet, not with time.
"""

from __future__ import annotations

import threading

from consumer_lib.wire.signing import UpdateCodec
from consumer_lib.wire.update import TokenKind, TokenUpdate


class RememberingCodec(UpdateCodec):
    """Delegates to `inner`; `encode()` of an update already seen returns its bytes."""

    def __init__(self, inner: UpdateCodec) -> None:  # no super().__init__: all delegated
        self._inner = inner
        self.accept_unsigned = inner.accept_unsigned
        self._lock = threading.Lock()
        self._latest: dict[tuple[str, TokenKind], tuple[TokenUpdate, bytes]] = {}
        self.hits = 0

    @property
    def signs(self) -> bool:
        return self._inner.signs

    @property
    def verifies(self) -> bool:
        return self._inner.verifies

    @property
    def verify_key_ids(self) -> list[str]:
        return self._inner.verify_key_ids

    def encode(self, update: TokenUpdate) -> bytes:
        key = (update.app_id, update.kind)
        known = self._latest.get(key)
        if known is not None and (known[0] is update or known[0] == update):
            self.hits += 1
            return known[1]
        raw = self._inner.encode(update)
        self._keep(update, raw)
        return raw

    def decode(self, raw: bytes | str) -> TokenUpdate:
        update = self._inner.decode(raw)
        self._keep(update, raw.encode() if isinstance(raw, str) else raw)
        return update

    def bytes_of(self, update: TokenUpdate) -> bytes | None:
        """The bytes kept for exactly `update`, if any."""
        known = self._latest.get((update.app_id, update.kind))
        if known is not None and (known[0] is update or known[0] == update):
            return known[1]
        return None

    def _keep(self, update: TokenUpdate, raw: bytes) -> None:
        key = (update.app_id, update.kind)
        with self._lock:
            known = self._latest.get(key)
            if known is None or known[0].version <= update.version:
                self._latest[key] = (update, raw)

    def forget(self, app_id: str, kind: TokenKind) -> None:
        """Drop what is kept for an app no longer served."""
        with self._lock:
            self._latest.pop((app_id, kind), None)
