"""Building Redis clients with explicit timeouts and retries, and reading the snapshot.

redis-py's exceptions stop here: everything that goes wrong becomes `StoreError`, and
a stored value that does not decode becomes `InvalidUpdate`.
"""

from __future__ import annotations

import logging

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from ._errors import InvalidUpdate, StoreError
from ._keys import KeyLayout
from ._model import TokenKind, TokenUpdate

log = logging.getLogger(__name__)

#: What redis-py raises for a server that is away, slow or confused.
REDIS_ERRORS: tuple[type[Exception], ...] = (redis.RedisError, OSError)


def connect_redis(url: str, *, timeout_s: float = 2.0) -> redis.Redis:
    """A client with bounded timeouts and two quick retries; connects lazily."""
    return redis.Redis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=2),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError],
        health_check_interval=30,
        client_name="wxtoken",
    )


def describe_redis_error(exc: BaseException) -> str:
    """A short, secret-free description of a redis-py failure."""
    return f"{exc.__class__.__name__}: {exc}".splitlines()[0][:200]


class SnapshotReader:
    """Reads the latest update per app and kind that the producer keeps in Redis."""

    def __init__(self, client: redis.Redis, keys: KeyLayout | None = None) -> None:
        self._client = client
        self._keys = keys or KeyLayout()

    def read(self, app_id: str, kind: TokenKind = TokenKind.ACCESS_TOKEN) -> TokenUpdate | None:
        """The stored update, or None when Redis holds none (never written, or expired)."""
        try:
            raw = self._client.get(self._keys.token(app_id, kind))
        except REDIS_ERRORS as exc:
            raise StoreError(f"reading {app_id}/{kind}: {describe_redis_error(exc)}") from None
        if raw is None:
            return None
        return TokenUpdate.decode(raw)

    def known(self) -> list[tuple[str, TokenKind]]:
        """Every (app_id, kind) ever written under this prefix, sorted."""
        try:
            members = self._client.smembers(self._keys.known)
        except REDIS_ERRORS as exc:
            raise StoreError(f"listing apps: {describe_redis_error(exc)}") from None
        found = []
        for raw in members:
            try:
                member = raw.decode() if isinstance(raw, bytes) else raw
                found.append(KeyLayout.parse_member(member))
            except (UnicodeDecodeError, ValueError):
                log.warning("ignoring malformed member in %s", self._keys.known)
        return sorted(found)

    def read_many(
        self, wanted: list[tuple[str, TokenKind]]
    ) -> dict[tuple[str, TokenKind], TokenUpdate | InvalidUpdate | None]:
        """One MGET for many apps; a value that does not decode is returned as its error."""
        if not wanted:
            return {}
        try:
            raws = self._client.mget([self._keys.token(app, kind) for app, kind in wanted])
        except REDIS_ERRORS as exc:
            raise StoreError(f"reading snapshot: {describe_redis_error(exc)}") from None
        result: dict[tuple[str, TokenKind], TokenUpdate | InvalidUpdate | None] = {}
        for key, raw in zip(wanted, raws, strict=True):
            if raw is None:
                result[key] = None
                continue
            try:
                result[key] = TokenUpdate.decode(raw)
            except InvalidUpdate as exc:
                result[key] = exc
        return result
