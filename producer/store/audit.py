"""The audit trail: who refreshed, overrode or asked for which token, when and why.

One capped Redis stream for all apps, so the cap is global:

    {prefix}:audit    stream, one entry per event, newest last; XADD with MAXLEN ~ max_entries

(The name is `KeyLayout.audit`, with every other key.) Each
entry's ID is Redis's own (`*`); its fields are UTF-8 strings, and the optional ones are
left out when there is nothing to say:

    at            UNIX seconds from the writer's clock, "1800000000.123"
    event         refresh | forced_refresh | override | refresh_request | request_over_budget
                  | clear_quota
    app_id        the app
    kind          the credential's kind (access_token, jsapi_ticket, ...)
    who           the producer id, or `ops:<user>@<host>` for the CLI (and for clear_quota,
                  the operator named in the signed request)
    version       (optional) the token version the event is about, an integer
    masked_token  (optional) the token as `consumer_lib.wire.update.mask` shows it, never whole
    reason        (optional) why: "scheduled", "expired", "none held",
                  "reported rejected (3 reports)", the operator's --reason... (at most 256)

`MAXLEN ~` trims whole stream nodes only (`stream-node-max-entries`, 100 by default), so
the stream holds between `max_entries` and about `max_entries` + 100 entries.

An entry about a new version is added by the compare-and-set that stores it, in the same
Redis call (`AuditLog.entry` builds it, `TokenStore.write` adds it when the write lands);
every other entry by `AuditLog.record`.

Recording never raises: an audit outage must not stop refreshing. A Redis failure is
logged once per outage at WARNING, and the entry is dropped. A `masked_token` that does
not look like `mask()`'s output is masked again before it is stored or shown, so a
caller's mistake cannot put a whole token in the stream.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import redis

from consumer_lib.outage import OutageLog
from consumer_lib.redis_errors import REDIS_ERRORS, describe_redis_error, translated
from consumer_lib.wire.keys import KeyLayout
from consumer_lib.wire.update import TokenKind, mask

log = logging.getLogger(__name__)

DEFAULT_MAX_ENTRIES = 10_000
MAX_REASON_CHARS = 256
MAX_WHO_CHARS = 128
#: Entries read per XREVRANGE round trip while looking for one app's entries.
_READ_BATCH = 500
#: What `mask()` returns: all stars for a short value, else four, an ellipsis, four, length.
_MASKED = re.compile(r"\*{1,12}|\S{4}…\S{4} \(\d{1,4} chars\)")


class AuditEvent(StrEnum):
    """What happened to a token."""

    #: The leader fetched a new token and wrote (or, Redis away, published) it.
    REFRESH = "refresh"
    #: The same, because a subscriber or operator reported the current token rejected.
    FORCED_REFRESH = "forced_refresh"
    #: An operator stored a token with `wxtoken set`.
    OVERRIDE = "override"
    #: An operator asked for a refresh (`wxtoken refresh`), or the leader handled a batch.
    REFRESH_REQUEST = "refresh_request"
    #: Reports of the current token arrived, but the fleet-wide budget forbade a refresh.
    REQUEST_OVER_BUDGET = "request_over_budget"
    #: The leader handled an operator's `wxtoken quota clear` (reason: result, errcode).
    CLEAR_QUOTA = "clear_quota"
    #: Third-party platforms: a customer authorized the platform (its code was redeemed),
    #: authorized it again, or revoked it; an authorizer's refresh token stopped working
    #: (61023), was replaced by one WeChat returned, or was recovered by a reconciliation.
    AUTHORIZED = "authorized"
    REAUTHORIZED = "reauthorized"
    UNAUTHORIZED = "unauthorized"
    NEEDS_REAUTHORIZATION = "needs_reauthorization"
    REFRESH_TOKEN_REPLACED = "refresh_token_replaced"
    REFRESH_TOKEN_RECOVERED = "refresh_token_recovered"


def audit_key(keys: KeyLayout) -> str:
    """The stream's name under `keys.prefix`."""
    return keys.audit


def safe_mask(value: str) -> str:
    """`value` if it is already `mask()`'s output, else `mask(value)`: never a whole token."""
    return value if _MASKED.fullmatch(value) else mask(value)


@dataclass(frozen=True)
class AuditRecord:
    """An entry to add (`AuditLog.entry`): `TokenStore.write` adds it with the write."""

    key: str
    #: The stream's cap (XADD MAXLEN ~).
    max_entries: int
    fields: dict[str, str]


@dataclass(frozen=True)
class AuditEntry:
    """One decoded entry of the stream (see the module docstring for the fields)."""

    id: str
    at_s: float
    event: str
    app_id: str
    kind: str
    who: str
    version: int | None
    masked_token: str | None
    reason: str | None


class AuditLog:
    """Appends to and reads the audit stream; thread-safe, and `record` never raises."""

    def __init__(
        self,
        redis_client: redis.Redis,
        keys: KeyLayout,
        *,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._client = redis_client
        self.key = audit_key(keys)
        self._max_entries = max_entries
        self._clock = clock
        self._outage = OutageLog(
            log, "Redis (audit trail)", meanwhile="dropping entries until Redis answers"
        )

    def record(
        self,
        event: str,
        app_id: str,
        *,
        kind: str = TokenKind.ACCESS_TOKEN.value,
        who: str,
        version: int | None = None,
        masked_token: str | None = None,
        reason: str | None = None,
    ) -> None:
        """Append one entry; on any failure log (once per Redis outage) and drop it."""
        try:
            entry = self.entry(
                event,
                app_id,
                kind=kind,
                who=who,
                version=version,
                masked_token=masked_token,
                reason=reason,
            )
        except Exception:
            log.exception("audit entry %s for %s dropped", event, app_id)
            return
        self.append(entry)

    def append(self, entry: AuditRecord) -> None:
        """Append an `entry` on its own; on any failure log (once per outage) and drop it."""
        try:
            self._client.xadd(
                entry.key,
                entry.fields,  # type: ignore[arg-type]  # redis-py's stub wants dict[bytes | ..., ...]
                maxlen=entry.max_entries,
                approximate=True,
            )
        except REDIS_ERRORS as exc:
            self._outage.failed(describe_redis_error(exc))
            return
        except Exception:
            log.exception(
                "audit entry %s for %s dropped",
                entry.fields.get("event"),
                entry.fields.get("app_id"),
            )
            return
        self._outage.succeeded()

    def entry(
        self,
        event: str,
        app_id: str,
        *,
        kind: str = TokenKind.ACCESS_TOKEN.value,
        who: str,
        version: int | None = None,
        masked_token: str | None = None,
        reason: str | None = None,
    ) -> AuditRecord:
        """The entry `record` would append, stamped now, for a write to add
        (`TokenStore.write`); report how that went with `added`."""
        fields = {
            "at": f"{self._clock():.3f}",
            "event": str(event),
            "app_id": app_id,
            "kind": str(kind),
            "who": who[:MAX_WHO_CHARS],
        }
        if version is not None:
            fields["version"] = str(int(version))
        if masked_token is not None:
            fields["masked_token"] = safe_mask(masked_token)
        if reason is not None:
            fields["reason"] = reason[:MAX_REASON_CHARS]
        return AuditRecord(self.key, self._max_entries, fields)

    def added(self, error: str | None) -> None:
        """A write added an `entry` (`error` None) or Redis refused it (logged once per
        outage, as `record` does)."""
        if error is None:
            self._outage.succeeded()
        else:
            self._outage.failed(error)

    def read(
        self, app_id: str | None = None, *, kind: str | None = None, limit: int = 50
    ) -> list[AuditEntry]:
        """Up to `limit` entries, newest first, of `app_id` (or all apps) and `kind` (or
        all kinds); malformed ones are skipped. A Redis failure raises `StoreError`."""
        found: list[AuditEntry] = []
        upper = "+"
        filtered = app_id is not None or kind is not None
        batch = max(limit, _READ_BATCH) if filtered else limit
        with translated("reading the audit trail", self._client):
            while len(found) < limit:
                rows = self._client.xrevrange(self.key, max=upper, min="-", count=batch) or []
                for raw_id, raw_fields in rows:
                    entry = _decode(raw_id, raw_fields or {})
                    if entry is None:
                        log.debug("skipping malformed audit entry %r", raw_id)
                    elif (app_id is None or entry.app_id == app_id) and (
                        kind is None or entry.kind == kind
                    ):
                        found.append(entry)
                        if len(found) == limit:
                            break
                if len(rows) < batch:
                    break
                last = rows[-1][0]
                upper = "(" + (last.decode() if isinstance(last, bytes) else str(last))
        return found


def _text(value: Any) -> str:
    """A stream field as text; bytes must be UTF-8 (else ValueError)."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, str):
        return value
    raise ValueError(f"unexpected field type {type(value).__name__}")


def _decode(raw_id: Any, raw_fields: Any) -> AuditEntry | None:
    """The entry, or None when a required field is missing or a value does not parse."""
    try:
        fields = {_text(name): _text(value) for name, value in dict(raw_fields).items()}
        at_s = float(fields["at"])
        event, app_id, kind, who = (fields[name] for name in ("event", "app_id", "kind", "who"))
        version = int(fields["version"]) if "version" in fields else None
        masked = fields.get("masked_token")
        if not (at_s > 0 and at_s < float("inf")) or not (event and app_id and kind and who):
            return None
        return AuditEntry(
            id=_text(raw_id),
            at_s=at_s,
            event=event,
            app_id=app_id,
            kind=kind,
            who=who,
            version=version,
            masked_token=None if masked is None else safe_mask(masked),
            reason=fields.get("reason"),
        )
    except (KeyError, ValueError, TypeError, UnicodeDecodeError):
        return None
