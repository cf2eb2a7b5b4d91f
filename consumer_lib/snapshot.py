"""Building Redis clients with explicit timeouts and retries, and reading the snapshot.

redis-py's exceptions stop here (`redis_errors.translated`): everything that goes wrong
becomes `StoreError`, and a stored value that does not decode becomes `InvalidUpdate`. A
refused login (WRONGPASS, NOAUTH) or command (NOPERM) becomes `StoreLoginRefused` naming
the user and WXTOKEN_REDIS_URL: a configuration error, not an outage.

`connect_redis()` is the one place clients are built. A `redis+sentinel://` URL (see
`consumer_lib.settings`) gives a client of the master that the sentinels currently name: its
`SentinelConnectionPool` asks them again on every new connection, so after a failover the
next reconnect (one of the quick retries, or the next call) reaches the promoted replica.
While no master is known, redis-py raises `MasterNotFoundError`, a `ConnectionError`, so
it becomes `StoreError` like any other outage.

A `rediss://` or `rediss+sentinel://` URL always verifies the server's certificate and host
name (`ssl_cert_reqs="required"`, `ssl_check_hostname=True`), with or without `tls=` files;
options in the URL's query cannot weaken that. A certificate that does not verify is a
`ConnectionError` from redis-py, so it is a `StoreError` too: never a plaintext fallback.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

import redis
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelConnectionPool

from .errors import InvalidUpdate
from .redis_errors import translated
from .settings import (
    REDIS_TLS_SCHEMES,
    SentinelUrl,
    TlsFiles,
    is_sentinel_url,
    parse_sentinel_url,
    refuse_key_password,
)
from .wire.keys import KeyLayout
from .wire.signing import PLAIN, UpdateCodec
from .wire.update import TokenKind, TokenUpdate

log = logging.getLogger(__name__)


def connect_redis(
    url: str,
    *,
    timeout_s: float = 2.0,
    tls: TlsFiles | None = None,
    max_connections: int | None = None,
) -> redis.Redis:
    """A client with bounded timeouts and two quick retries; connects lazily.

    `url` is a plain Redis URL or a sentinel one (then the client follows the master).
    `tls` (from `settings.redis_tls`) names the CA and client certificate files of a
    `rediss` URL. `max_connections` sizes the pool to the threads that share the client.
    A malformed URL, or `tls` with a non-TLS URL, raises `ValueError` (settings have
    validated both before).
    """
    secure = urlsplit(url).scheme.lower() in REDIS_TLS_SCHEMES
    if tls is not None and not secure:
        raise ValueError("TLS files given for a Redis URL that is not rediss://")
    tls_options = redis_tls_options(tls) if secure else {}
    options: dict[str, Any] = {
        "socket_timeout": timeout_s,
        "socket_connect_timeout": timeout_s,
        "retry": Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=2),
        "retry_on_error": [redis.ConnectionError, redis.TimeoutError],
        "health_check_interval": 30,
        "client_name": "wxtoken",
        **tls_options,
    }
    if max_connections is not None:
        options["max_connections"] = max_connections
    if is_sentinel_url(url):
        return _connect_sentinel(parse_sentinel_url(url), timeout_s=timeout_s, options=options)
    client = redis.Redis.from_url(url, **options)
    # redis-py lets query parameters override keyword arguments; not for verification.
    client.connection_pool.connection_kwargs.update(tls_options)
    return client


def redis_tls_options(tls: TlsFiles | None) -> dict[str, Any]:
    """The redis-py keyword arguments of a verifying TLS connection using `tls`'s files."""
    tls = tls or TlsFiles()
    return {
        "ssl_cert_reqs": "required",
        "ssl_check_hostname": True,
        "ssl_ca_certs": _str_or_none(tls.ca_file),
        "ssl_certfile": _str_or_none(tls.cert_file),
        "ssl_keyfile": _str_or_none(tls.key_file),
        # Never an interactive pass phrase prompt from OpenSSL in a service.
        "ssl_password": refuse_key_password,
    }


def _str_or_none(path: object) -> str | None:
    return None if path is None else str(path)


class _SentinelMasterRedis(redis.Redis):
    """A master client that also closes the sentinel connections it was found through."""

    def close(self) -> None:
        super().close()
        pool = self.connection_pool
        if isinstance(pool, SentinelConnectionPool):
            # What Sentinel.close() does from redis 8.2 on; older versions have no close().
            for sentinel in pool.sentinel_manager.sentinels:
                sentinel.close()


def _connect_sentinel(
    parsed: SentinelUrl, *, timeout_s: float, options: dict[str, Any]
) -> redis.Redis:
    """A client of `parsed.service`'s current master, with the same options as a plain one.

    The sentinels are asked with the same timeouts but no retry of their own: the next
    sentinel in the list is the retry, and the master connection's retries cover the rest.
    """
    sentinel = Sentinel(  # type: ignore[no-untyped-call,unused-ignore]  # typed from redis 8 on
        list(parsed.sentinels),
        sentinel_kwargs={
            "socket_timeout": timeout_s,
            "socket_connect_timeout": timeout_s,
            "retry": Retry(NoBackoff(), retries=0),
            "client_name": "wxtoken",
        },
    )
    client: redis.Redis = sentinel.master_for(  # type: ignore[no-untyped-call,unused-ignore]  # typed from redis 8 on
        parsed.service,
        redis_class=_SentinelMasterRedis,
        db=parsed.db,
        username=parsed.username,
        password=parsed.password,
        ssl=parsed.tls,
        **options,
    )
    return client


class SnapshotReader:
    """Reads the latest update per app and kind that the producer keeps in Redis."""

    def __init__(
        self, client: redis.Redis, keys: KeyLayout | None = None, codec: UpdateCodec = PLAIN
    ) -> None:
        self._client = client
        self._keys = keys or KeyLayout()
        self._codec = codec

    def read(self, app_id: str, kind: TokenKind = TokenKind.ACCESS_TOKEN) -> TokenUpdate | None:
        """The stored update, or None when Redis holds none (never written, or expired)."""
        with translated(f"reading {app_id}/{kind}", self._client):
            raw = self._client.get(self._keys.token(app_id, kind))
        if raw is None:
            return None
        return self._codec.decode(raw)

    def known(self) -> list[tuple[str, TokenKind]]:
        """Every (app_id, kind) ever written under this prefix, sorted."""
        with translated("listing apps", self._client):
            members = self._client.smembers(self._keys.known)
        found = []
        for raw in members:
            try:
                member = raw.decode() if isinstance(raw, bytes) else raw
                found.append(KeyLayout.parse_member(member))
            except (UnicodeDecodeError, ValueError):
                log.warning("ignoring malformed member in %s", self._keys.known)
        return sorted(found)

    def read_many_raw(
        self, wanted: list[tuple[str, TokenKind]]
    ) -> dict[tuple[str, TokenKind], bytes | None]:
        """The stored bytes of many apps, undecoded: one MGET."""
        if not wanted:
            return {}
        with translated("reading snapshot", self._client):
            raws = self._client.mget([self._keys.token(app, kind) for app, kind in wanted])
        return {
            key: raw.encode() if isinstance(raw, str) else raw
            for key, raw in zip(wanted, raws, strict=True)
        }

    def read_many_raw_ttl(
        self, wanted: list[tuple[str, TokenKind]]
    ) -> dict[tuple[str, TokenKind], tuple[bytes | None, int | None]]:
        """The stored bytes of many apps, undecoded, each with its key's `PTTL` in ms
        (None when the key has no expiry, or is gone): one round trip.

        The producer sets the expiry relative to its own clock (`PX`), so `PTTL` counted
        from the reply's arrival is the token's remaining life on the reader's clock, with
        no clock compared across hosts; the reply's travel time only shortens it."""
        if not wanted:
            return {}
        keys = [self._keys.token(app, kind) for app, kind in wanted]
        with translated("reading snapshot", self._client):
            pipe = self._client.pipeline(transaction=False)
            pipe.mget(keys)
            for key in keys:
                pipe.pttl(key)
            replies = pipe.execute()
        raws, ttls = replies[0], replies[1:]
        return {
            key: (raw.encode() if isinstance(raw, str) else raw, _ttl_ms(ttl))
            for key, raw, ttl in zip(wanted, raws, ttls, strict=True)
        }

    def decode(self, raw: bytes | str) -> TokenUpdate:
        """Verify and parse stored bytes (`InvalidUpdate` when they are not an update)."""
        return self._codec.decode(raw)

    def read_many(
        self, wanted: list[tuple[str, TokenKind]]
    ) -> dict[tuple[str, TokenKind], TokenUpdate | InvalidUpdate | None]:
        """One MGET for many apps; a value that does not decode is returned as its error."""
        result: dict[tuple[str, TokenKind], TokenUpdate | InvalidUpdate | None] = {}
        for key, raw in self.read_many_raw(wanted).items():
            if raw is None:
                result[key] = None
                continue
            try:
                result[key] = self._codec.decode(raw)
            except InvalidUpdate as exc:
                result[key] = exc
        return result


def _ttl_ms(reply: object) -> int | None:
    """A `PTTL` reply as a positive number of ms; None for -1/-2 or anything odd."""
    if isinstance(reply, bool) or not isinstance(reply, int) or reply <= 0:
        return None
    return reply
