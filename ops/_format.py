"""How the `wxtoken` CLI shows token updates: plain text for people, JSON for scripts.

Nothing here ever renders a whole token unless the caller passes `reveal=True`.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import TypeAdapter, ValidationError

from consumer_lib.errors import InvalidUpdate
from consumer_lib.wire.signing import PLAIN, UpdateCodec
from consumer_lib.wire.update import MAX_TOKEN_CHARS, AppId, TokenKind, TokenUpdate
from producer.store.audit import AuditEntry
from producer.store.upstream_failures import REFUSED, UpstreamFailure

#: One entry of the snapshot, as `SnapshotReader.read_many` returns it.
SnapshotEntry = TokenUpdate | InvalidUpdate | None

MAX_REASON_CHARS = 256  # TokenUpdate.reason
_APP_ID = TypeAdapter(AppId)
STATUS_COLUMNS = (
    "APP",
    "KIND",
    "STATE",
    "VERSION",
    "SOURCE",
    "LEFT",
    "AGE",
    "PRODUCER",
    "SERVED",
    "NOTE",
)
HISTORY_COLUMNS = ("TIME", "EVENT", "APP", "KIND", "VERSION", "WHO", "TOKEN", "REASON")


def check_app_id(value: str) -> str:
    """`value` if it is an AppId of the wire model, else ValueError."""
    try:
        return _APP_ID.validate_python(value)
    except ValidationError:
        raise ValueError("must be 1-64 of A-Z a-z 0-9 _ . -") from None


def check_reason(value: str) -> str:
    if len(value) > MAX_REASON_CHARS:
        raise ValueError(f"at most {MAX_REASON_CHARS} characters")
    return value


def check_token(raw: str) -> str:
    """The token in `raw` without surrounding whitespace; ValueError never quotes it."""
    token = raw.strip()
    if not token:
        raise ValueError("no token on standard input (pipe it in: wxtoken set APP < file)")
    if len(token) > MAX_TOKEN_CHARS:
        raise ValueError(f"the token is longer than {MAX_TOKEN_CHARS} characters")
    if any(char.isspace() for char in token):
        raise ValueError("the token contains whitespace; give exactly one token")
    if not token.isprintable():
        raise ValueError("the token contains non-printable characters")
    return token


def seconds(value: float) -> str:
    """`7190s`, rounded down to whole seconds (a negative value stays negative)."""
    return f"{int(value)}s"


def timestamp(unix_s: float) -> str:
    """UTC ISO 8601 to the second, e.g. `2027-01-15T08:00:00Z`."""
    return datetime.fromtimestamp(unix_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def to_json(data: object) -> str:
    return json.dumps(data, ensure_ascii=False, indent=2, sort_keys=True)


def update_dict(update: TokenUpdate, *, now_s: float, reveal: bool = False) -> dict[str, Any]:
    """`TokenUpdate.public_dict` plus the seconds left and the age at `now_s`."""
    data = update.public_dict(reveal=reveal)
    data["seconds_left"] = round(update.seconds_left(now_s), 3)
    data["age_s"] = round(now_s - update.issued_at, 3)
    return data


def describe_update(update: TokenUpdate, *, now_s: float, reveal: bool = False) -> str:
    """The multi-line human view of one stored update (`wxtoken get`)."""
    left_s = update.seconds_left(now_s)
    expiry = f"in {seconds(left_s)}" if left_s > 0 else f"expired {seconds(-left_s)} ago"
    rows = [
        ("app", update.app_id),
        ("kind", str(update.kind)),
        ("token", update.value if reveal else update.masked),
        ("version", str(update.version)),
        ("source", str(update.source)),
        ("producer", update.producer_id),
        ("reason", update.reason or "-"),
        ("expires", f"{expiry} ({timestamp(update.expires_at)})"),
        ("age", f"{seconds(now_s - update.issued_at)} (issued {timestamp(update.issued_at)})"),
    ]
    width = max(len(label) for label, _ in rows) + 1
    return "\n".join(f"{label + ':':<{width}} {value}" for label, value in rows)


def status_records(
    entries: Mapping[tuple[str, TokenKind], SnapshotEntry],
    *,
    now_s: float,
    failures: Mapping[tuple[str, TokenKind], UpstreamFailure] | None = None,
    served: Collection[str] | None = None,
) -> list[dict[str, Any]]:
    """One JSON-able record per (app, kind), with a `state` of ok, refused (upstream refuses
    the token held, its refresh is held back), expired, missing, invalid, the last failed
    fetch (`upstream_error`) when it is newer than the token held, and
    `served`: whether the leader's announcement lists the app (None without one)."""
    failures = failures or {}
    records = []
    for (app_id, kind), entry in sorted(entries.items()):
        record: dict[str, Any] = {
            "app_id": app_id,
            "kind": str(kind),
            "state": "missing",
            "version": None,
            "source": None,
            "seconds_left": None,
            "age_s": None,
            "producer_id": None,
            "reason": None,
            "error": None,
            "served": None if served is None else app_id in served,
        }
        if isinstance(entry, InvalidUpdate):
            record.update(state="invalid", error=str(entry))
        elif isinstance(entry, TokenUpdate):
            record.update(
                state="ok" if entry.is_valid_at(now_s) else "expired",
                version=entry.version,
                source=str(entry.source),
                seconds_left=round(entry.seconds_left(now_s), 3),
                age_s=round(now_s - entry.issued_at, 3),
                producer_id=entry.producer_id,
                reason=entry.reason,
            )
        failure = failures.get((app_id, kind))
        # A token issued after the failure is a later good fetch: the failure is history.
        superseded = isinstance(entry, TokenUpdate) and (
            failure is None or failure.at_s < entry.issued_at
        )
        record["upstream_error"] = (
            None
            if failure is None or superseded
            else {**failure.model_dump(), "note": failure.note(now_s=now_s)}
        )
        refused = failure is not None and failure.failure_kind == REFUSED
        if record["upstream_error"] and refused and record["state"] == "ok":
            record["state"] = "refused"  # valid by its expiry, dead upstream
        records.append(record)
    return records


def status_table(records: Sequence[Mapping[str, Any]]) -> str:
    """The records of `status_records` as an aligned text table."""

    def cell(value: Any, *, duration: bool = False) -> str:
        if value is None:
            return "-"
        return seconds(value) if duration else str(value)

    rows = [list(STATUS_COLUMNS)]
    for record in records:
        rows.append(
            [
                cell(record["app_id"]),
                cell(record["kind"]),
                cell(record["state"]),
                cell(record["version"]),
                cell(record["source"]),
                cell(record["seconds_left"], duration=True),
                cell(record["age_s"], duration=True),
                cell(record["producer_id"]),
                cell({True: "yes", False: "no"}.get(record["served"])),
                _note(record),
            ]
        )
    return _table(rows)


def _note(record: Mapping[str, Any]) -> str:
    """The NOTE cell: why the value is invalid, and the last failed fetch."""
    failure = record.get("upstream_error")
    notes = [record["error"] or "", failure["note"] if failure else ""]
    return "; ".join(note for note in notes if note)


def watch_line(update: TokenUpdate, *, now_s: float) -> str:
    """One line per received update (`wxtoken watch`), the token masked."""
    return (
        f"{timestamp(now_s)} {update.app_id} {update.kind} v{update.version} "
        f"{update.source} left={seconds(update.seconds_left(now_s))} "
        f"producer={update.producer_id} token={update.masked}"
    )


def watch_json(update: TokenUpdate, *, now_s: float) -> str:
    """One compact JSON object per received update, the token masked."""
    data = update_dict(update, now_s=now_s)
    data["received_at"] = now_s
    return json.dumps(data, ensure_ascii=False, sort_keys=True)


def message_kind(body: bytes, *, codec: UpdateCodec = PLAIN) -> TokenKind | None:
    """The kind of the update in `body`; None when it is not a valid update."""
    try:
        return codec.decode(body).kind
    except InvalidUpdate:
        return None


#: The highest version `wxtoken watch` has shown per (app, kind).
Seen = dict[tuple[str, TokenKind], int]


def message_line(
    body: bytes,
    *,
    now_s: float,
    as_json: bool,
    codec: UpdateCodec = PLAIN,
    seen: Seen | None = None,
) -> str:
    """What `wxtoken watch` prints for one message: the update, or why it was rejected.

    With `seen`, an update whose version was shown before (the leader re-publishes what it
    holds every minute) is marked, in text `(re-published)`, in JSON `"republished": true`,
    and one older than a version shown `(older than vN)` / `"older_than": N`."""
    try:
        update = codec.decode(body)
    except InvalidUpdate as exc:
        if as_json:
            return json.dumps({"received_at": now_s, "rejected": str(exc)}, sort_keys=True)
        return f"{timestamp(now_s)} rejected: {exc}"
    shown = None if seen is None else seen.get((update.app_id, update.kind))
    if seen is not None and (shown is None or update.version > shown):
        seen[(update.app_id, update.kind)] = update.version
    republished = shown is not None and update.version == shown
    older_than = shown if shown is not None and update.version < shown else None
    if as_json:
        data = json.loads(watch_json(update, now_s=now_s))
        data["republished"] = republished
        if older_than is not None:
            data["older_than"] = older_than
        return json.dumps(data, ensure_ascii=False, sort_keys=True)
    line = watch_line(update, now_s=now_s)
    if republished:
        return f"{line} (re-published)"
    if older_than is not None:
        return f"{line} (older than v{older_than})"
    return line


def history_records(entries: Sequence[AuditEntry]) -> list[dict[str, Any]]:
    """The audit entries as JSON-able dicts (`wxtoken history --json`); tokens stay masked."""
    return [
        {
            "id": entry.id,
            "at": timestamp(entry.at_s),
            "at_s": entry.at_s,
            "event": entry.event,
            "app_id": entry.app_id,
            "kind": entry.kind,
            "version": entry.version,
            "who": entry.who,
            "masked_token": entry.masked_token,
            "reason": entry.reason,
        }
        for entry in entries
    ]


def one_line(value: str | int | None) -> str:
    """A table cell: `-` for nothing, control characters (newlines) as spaces."""
    if value is None or value == "":
        return "-"
    return "".join(char if char.isprintable() else " " for char in str(value))


def history_table(entries: Sequence[AuditEntry]) -> str:
    """The audit entries as an aligned text table, newest first as given."""
    rows = [list(HISTORY_COLUMNS)]
    for entry in entries:
        rows.append(
            [
                timestamp(entry.at_s),
                *map(one_line, (entry.event, entry.app_id, entry.kind, entry.version)),
                *map(one_line, (entry.who, entry.masked_token, entry.reason)),
            ]
        )
    return _table(rows)


def _table(rows: Sequence[Sequence[str]]) -> str:
    """`rows` (the header first) as aligned columns two spaces apart; the last column is
    not padded, so lines carry no trailing blanks."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = []
    for row in rows:
        padded = [value.ljust(width) for value, width in zip(row, widths, strict=False)]
        lines.append("  ".join([*padded, row[-1]]).rstrip())
    return "\n".join(lines)
