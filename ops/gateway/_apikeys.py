"""The gateway's API keys: a JSON file of named, hashed keys with app patterns and scopes.

    {"keys": [{"name": "billing", "sha256": "<hex of the key's SHA-256>",
               "apps": ["wx*"], "scopes": ["read", "report"], "rate_per_s": 50}]}

A key is `wxgw_` and 43 URL-safe characters (256 random bits), shown once by
`wxtoken gateway-key add` and stored only as its SHA-256: with that much entropy a fast
hash is as safe as a slow one, and it keeps the per-request check cheap. `apps` are
`fnmatch` patterns (`*` and `?` only) over app ids. Scopes: `read` (GET a token), `report`
(passive refresh), `override` (store a token obtained elsewhere).
"""

from __future__ import annotations

import contextlib
import enum
import fnmatch
import hashlib
import json
import os
import secrets
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from consumer_lib import ConfigError

KEY_PREFIX = "wxgw_"
#: More than this many keys in one file is a mistake, not a deployment.
MAX_KEYS = 10_000
#: A keys file bigger than this is refused before it is parsed.
MAX_FILE_BYTES = 4 * 1024 * 1024
#: Per key, at most this many (app -> allowed) answers are remembered.
_ALLOWED_CACHE = 4096

KeyName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.@-]{1,64}$")]
AppPattern = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.*?-]{1,64}$")]
Sha256Hex = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


class Scope(enum.StrEnum):
    """What a key may do."""

    READ = "read"
    REPORT = "report"
    OVERRIDE = "override"


class KeyEntry(BaseModel):
    """One key as the file stores it (never the key itself)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: KeyName
    sha256: Sha256Hex
    apps: Annotated[tuple[AppPattern, ...], Field(min_length=1, max_length=100)]
    scopes: Annotated[tuple[Scope, ...], Field(min_length=1, max_length=3)]
    #: Requests per second this key may make (bursts of twice that); None: the default.
    rate_per_s: Annotated[float, Field(gt=0, le=1_000_000)] | None = None


class KeysFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    keys: Annotated[list[KeyEntry], Field(max_length=MAX_KEYS)]


class ApiKey:
    """A key the gateway accepts: its name, scopes and a cached app check."""

    __slots__ = ("_allowed", "apps", "name", "rate_per_s", "scopes")

    def __init__(self, entry: KeyEntry) -> None:
        self.name = entry.name
        self.apps = entry.apps
        self.scopes = frozenset(entry.scopes)
        self.rate_per_s = entry.rate_per_s
        self._allowed: dict[str, bool] = {}

    def may_use(self, app_id: str) -> bool:
        """True when one of the key's patterns matches `app_id` (answers are cached)."""
        allowed = self._allowed.get(app_id)
        if allowed is None:
            allowed = any(fnmatch.fnmatchcase(app_id, p) for p in self.apps)
            if len(self._allowed) >= _ALLOWED_CACHE:
                self._allowed.clear()
            self._allowed[app_id] = allowed
        return allowed


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    """A fresh random key, to be shown once."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def load_entries(path: Path) -> list[KeyEntry]:
    """The entries of a keys file; anything wrong raises `ConfigError` naming the file."""
    return parse_entries(path, read_keys_file(path))


def read_keys_file(path: Path) -> bytes:
    """The file's bytes (at most `MAX_FILE_BYTES`); `ConfigError` naming the file."""
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"keys file {path}: cannot read it ({exc.strerror})") from None
    if len(raw) > MAX_FILE_BYTES:
        raise ConfigError(f"keys file {path}: larger than {MAX_FILE_BYTES} bytes")
    return raw


def parse_entries(path: Path, raw: bytes) -> list[KeyEntry]:
    """The entries of the bytes `raw` of the keys file `path`; `ConfigError` naming it."""
    try:
        entries = KeysFile.model_validate_json(raw).keys
    except ValidationError as exc:
        first = exc.errors(include_input=False, include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "file"
        raise ConfigError(f"keys file {path}: {where}: {first['msg']}") from None
    _check_unique(path, entries)
    return entries


def _check_unique(path: Path, entries: Iterable[KeyEntry]) -> None:
    names: set[str] = set()
    hashes: set[str] = set()
    for entry in entries:
        if entry.name in names:
            raise ConfigError(f"keys file {path}: the name {entry.name!r} appears twice")
        if entry.sha256 in hashes:
            raise ConfigError(f"keys file {path}: the key named {entry.name!r} appears twice")
        names.add(entry.name)
        hashes.add(entry.sha256)


def add_key(
    path: Path,
    name: str,
    *,
    apps: Iterable[str],
    scopes: Iterable[str],
    rate_per_s: float | None = None,
) -> str:
    """Add a new key to `path` (created 0600 when missing) and return the key, once.

    Raises `ValueError` for a bad name, pattern or scope, or a name already used, and
    `ConfigError` when the existing file is unreadable or malformed.
    """
    entries = load_entries(path) if path.exists() else []
    if any(e.name == name for e in entries):
        raise ValueError(f"a key named {name!r} exists already in {path}")
    scopes = list(scopes)
    unknown = [s for s in scopes if s not in {scope.value for scope in Scope}]
    if unknown:
        raise ValueError(
            f"unknown scope {unknown[0]!r}: scopes are {', '.join(s.value for s in Scope)}"
        )
    key = new_key()
    try:
        entry = KeyEntry(
            name=name,
            sha256=hash_key(key),
            apps=tuple(apps),
            scopes=tuple(Scope(s) for s in scopes),
            rate_per_s=rate_per_s,
        )
    except ValidationError as exc:
        first = exc.errors(include_input=False, include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ValueError(f"{where}: {first['msg']}") from None
    entries.append(entry)
    write_entries(path, entries)
    return key


def write_entries(path: Path, entries: Iterable[KeyEntry]) -> None:
    """Replace the keys file atomically (a new file renamed over it, so a gateway never
    reads half a file). The new file keeps the old one's mode and, where this process may,
    its owner and group, so a gateway that could read the old file reads the new one; a
    new file is 0600. Raises `OSError`."""
    text = json.dumps(
        {"keys": [e.model_dump(mode="json", exclude_none=True) for e in entries]}, indent=2
    )
    try:
        old = path.stat()
    except FileNotFoundError:
        old = None
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text + "\n")
        if old is not None:
            os.chmod(tmp, stat.S_IMODE(old.st_mode))
            if (old.st_uid, old.st_gid) != (os.getuid(), os.getgid()):
                with contextlib.suppress(PermissionError):  # not root: the owner is ours
                    os.chown(tmp, old.st_uid, old.st_gid)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class KeyRing:
    """The keys a gateway accepts, looked up by the presented key in O(1).

    `find()` hashes a presented key once: a key found is remembered by its text (only keys
    in the file, so the memory is bounded), an unknown one is hashed again each time.
    `reload_if_changed()` re-reads the file and takes its keys when its content changed; a
    broken file keeps the old keys.

    Changes are found by content (a SHA-256 of the bytes), never by mtime or inode: a
    rewrite in place may keep the mtime (a coarse clock, a copy with `cp -p`, a restored
    backup), and the file is replaced by rename (`wxtoken gateway-key`), which a path
    mounted as a single file (a compose file secret) never shows: mount its directory.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._by_hash: dict[str, ApiKey] = {}
        self._by_key: dict[str, ApiKey] = {}
        self._digest = b""
        self.load()

    def load(self) -> None:
        """Read the file; `ConfigError` when it is unreadable or malformed."""
        self._take(read_keys_file(self.path))

    def _take(self, raw: bytes) -> None:
        entries = parse_entries(self.path, raw)
        self._by_hash = {e.sha256: ApiKey(e) for e in entries}
        self._by_key = {}
        self._digest = hashlib.sha256(raw).digest()

    def reload_if_changed(self) -> bool:
        """Re-read the file; when its content changed, its keys are in force from now on
        (True). `ConfigError` (the old keys stay) when it is unreadable or malformed."""
        raw = read_keys_file(self.path)
        if hashlib.sha256(raw).digest() == self._digest:
            return False
        self._take(raw)
        return True

    def __len__(self) -> int:
        return len(self._by_hash)

    def find(self, presented: str) -> ApiKey | None:
        key = self._by_key.get(presented)
        if key is not None:
            return key
        key = self._by_hash.get(hash_key(presented))
        if key is not None:
            self._by_key[presented] = key
        return key
