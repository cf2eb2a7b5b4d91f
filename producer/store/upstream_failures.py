"""The last failed upstream fetch of each credential, for `wxtoken status`.

    {prefix}:upstream_errors   hash, field "{app_id}:{kind}" -> UpstreamFailure as JSON

The refresher calls `UpstreamErrors.record(app_id, kind, exc)` on every failed fetch; the
newest failure of a credential replaces the one before. Nothing is deleted on success:
`wxtoken status` shows a failure only while it is newer than the token Redis holds (or no
token is held), so a later good fetch hides it. A failure whose errmsg named the caller's
address (40164/61004, WeCom 60020) carries it as `caller_ip`, and status says
"IP 1.2.3.4 not whitelisted".

`record` never raises (an outage is logged once); `read_all` and `read_one` (the gateway's
503 names the failure) raise `StoreError`, and skip values that do not parse (Redis is
outside input).
"""

from __future__ import annotations

import ipaddress
import logging
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

import redis
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from consumer_lib.errors import InvalidUpdate
from consumer_lib.outage import OutageLog
from consumer_lib.redis_errors import REDIS_ERRORS, describe_redis_error, translated
from consumer_lib.wire.keys import KeyLayout
from consumer_lib.wire.update import TokenKind, TokenUpdate, decode_json_model

if TYPE_CHECKING:  # the gateway reads failures and must not import requests (upstream's)
    from producer.upstream.errors import UpstreamError

log = logging.getLogger(__name__)

MAX_FAILURE_BYTES = 2048
#: The `failure_kind` of a held token upstream refuses (no fetch failed: a check did).
REFUSED = "refused"
_APP_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def _utc(unix_s: float) -> str:
    return datetime.fromtimestamp(unix_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _an_ip(value: str) -> str:
    return str(ipaddress.ip_address(value))


class UpstreamFailure(BaseModel):
    """One failed fetch, as stored."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    at_s: Annotated[float, Field(gt=0)]
    #: How the producer backs off: transient, config, quota, token_invalid.
    failure_kind: Annotated[str, StringConstraints(pattern=r"^[a-z_]{1,32}$")]
    errcode: Annotated[int, Field(ge=-(2**31), lt=2**31)] | None = None
    caller_ip: Annotated[str, AfterValidator(_an_ip)] | None = None
    message: Annotated[str, StringConstraints(max_length=256)]
    #: `refused` (upstream refuses the held token, a budget holds its refresh back): when
    #: that refresh is due.
    due_at_s: Annotated[float, Field(gt=0)] | None = None

    def note(self, *, now_s: float) -> str:
        """What `wxtoken status` says about it."""
        ago = f"{max(0, int(now_s - self.at_s))}s ago"
        if self.failure_kind == REFUSED:
            due = "" if self.due_at_s is None else f", refresh due at {_utc(self.due_at_s)}"
            return f"refused upstream ({ago}){due}"
        if self.caller_ip is not None:
            return f"IP {self.caller_ip} not whitelisted (errcode {self.errcode}, {ago})"
        return f"last fetch failed {ago}: {self.message}"


class UpstreamErrors:
    """Writes and reads the last failure per credential; thread-safe."""

    def __init__(
        self,
        redis_client: redis.Redis,
        keys: KeyLayout,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = redis_client
        self._key = keys.upstream_errors
        self._clock = clock
        self._outage = OutageLog(
            log,
            "Redis (upstream failures)",
            meanwhile="not recording upstream failures until Redis answers",
        )

    def record(self, app_id: str, kind: TokenKind, exc: UpstreamError) -> None:
        """Store `exc` as the last failure of `app_id`/`kind`; on a Redis failure log
        (once per outage) and drop it."""
        failure = UpstreamFailure(
            at_s=self._clock(),
            failure_kind=str(exc.kind),
            errcode=exc.errcode,
            caller_ip=exc.caller_ip,
            message=str(exc)[:256],
        )
        self._store(app_id, kind, failure)

    def _store(self, app_id: str, kind: TokenKind, failure: UpstreamFailure) -> None:
        try:
            self._client.hset(self._key, KeyLayout.member(app_id, kind), failure.model_dump_json())
        except REDIS_ERRORS as exc_redis:
            self._outage.failed(describe_redis_error(exc_redis))
            return
        self._outage.succeeded()

    def record_refused(
        self, app_id: str, kind: TokenKind, held: TokenUpdate, due_at_s: float | None
    ) -> None:
        """Upstream refuses `held`, and a budget holds its refresh back until `due_at_s`:
        kept like a failed fetch, so `wxtoken status` shows it until a newer token."""
        self._store(
            app_id,
            kind,
            UpstreamFailure(
                at_s=self._clock(),
                failure_kind=REFUSED,
                message=f"upstream refuses {held.masked} v{held.version}"[:256],
                due_at_s=due_at_s,
            ),
        )

    def read_one(self, app_id: str, kind: TokenKind) -> UpstreamFailure | None:
        """The last failure of `app_id`/`kind` (HGET), None when none or malformed."""
        with translated("reading upstream failures", self._client):
            value = self._client.hget(self._key, KeyLayout.member(app_id, kind))
        if value is None:
            return None
        try:
            return decode_json_model(
                UpstreamFailure, value, max_bytes=MAX_FAILURE_BYTES, what="upstream failure"
            )
        except InvalidUpdate as exc:
            log.debug("skipping a malformed upstream failure in Redis: %s", exc)
            return None

    def read_all(self) -> dict[tuple[str, TokenKind], UpstreamFailure]:
        """Every credential's last failure; malformed fields or values are skipped."""
        with translated("reading upstream failures", self._client):
            raw = self._client.hgetall(self._key)
        found: dict[tuple[str, TokenKind], UpstreamFailure] = {}
        for field, value in dict(raw).items():
            try:
                member = field.decode() if isinstance(field, bytes) else str(field)
                app_id, kind = KeyLayout.parse_member(member)
                if not _APP_ID.fullmatch(app_id):
                    raise ValueError("not an app id")
                found[(app_id, kind)] = decode_json_model(
                    UpstreamFailure, value, max_bytes=MAX_FAILURE_BYTES, what="upstream failure"
                )
            except (InvalidUpdate, ValueError, UnicodeDecodeError) as exc:
                log.debug("skipping a malformed upstream failure in Redis: %s", exc)
        return found
