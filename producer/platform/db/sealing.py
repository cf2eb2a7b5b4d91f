"""Secrets at rest: AES-256-GCM under keys only producers hold, each value bound to its row.

The key file (`WXTOKEN_PLATFORM_KEY_FILE`) holds one key per line, each 32 random bytes in
base64 (`openssl rand -base64 32`); blank lines and `#` comments are skipped. The first key
seals; every key opens. A key is named by its id, the first 16 hex digits of a SHA-256 of
it, stored beside each sealed value. To rotate: put a new key first, keep the old ones below,
run `PlatformRegistry.rotate_keys()`, then drop the old lines.

A value is sealed with associated data naming its place (table, column, the row's key
columns), so a ciphertext copied into another row or column does not open there.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from consumer_lib.errors import ConfigError
from producer.platform.errors import SealBroken

SETTING = "WXTOKEN_PLATFORM_KEY_FILE"
KEY_BYTES = 32
NONCE_BYTES = 12
_AAD_PREFIX = b"wxtoken-platform-seal-v1"


class Sealed(NamedTuple):
    """A sealed value as stored: nonce + ciphertext + tag, and the id of the key used."""

    blob: bytes
    key_id: str


def key_id(key: bytes) -> str:
    """The name stored beside each value sealed with `key`; reveals nothing of the key."""
    return hashlib.sha256(b"wxtoken-platform-key-id\x00" + key).hexdigest()[:16]


def place(*parts: str) -> bytes:
    """The associated data naming where a value lives: each part length-prefixed, so
    ("a", "bc") and ("ab", "c") differ."""
    out = [_AAD_PREFIX]
    for part in parts:
        raw = part.encode()
        out.append(len(raw).to_bytes(4, "big") + raw)
    return b"".join(out)


class Sealer:
    """Seals with the first key, opens with any; `place` binds a value to its row."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise ConfigError(f"{SETTING}: the key file holds no key")
        for key in keys:
            if len(key) != KEY_BYTES:
                raise ConfigError(f"{SETTING}: each key must be {KEY_BYTES} bytes")
        self._sealing_id = key_id(keys[0])
        self._ciphers = {key_id(key): AESGCM(key) for key in keys}

    @classmethod
    def from_file(cls, path: Path) -> Sealer:
        """The keys of a key file (see the module docstring); problems are `ConfigError`s."""
        try:
            text = path.read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{SETTING}: cannot read {path} ({exc})") from None
        keys = []
        for number, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            try:
                key = base64.b64decode(line, validate=True)
            except binascii.Error:
                raise ConfigError(f"{SETTING}: {path} line {number} is not base64") from None
            if len(key) != KEY_BYTES:
                raise ConfigError(
                    f"{SETTING}: {path} line {number} holds {len(key)} bytes, not {KEY_BYTES}"
                )
            keys.append(key)
        return cls(keys)

    @property
    def sealing_key_id(self) -> str:
        """The id of the key new values are sealed with (the file's first)."""
        return self._sealing_id

    @property
    def key_ids(self) -> list[str]:
        return list(self._ciphers)

    def seal(self, plaintext: str, where: bytes) -> Sealed:
        nonce = os.urandom(NONCE_BYTES)
        cipher = self._ciphers[self._sealing_id]
        return Sealed(nonce + cipher.encrypt(nonce, plaintext.encode(), where), self._sealing_id)

    def open(self, sealed: Sealed, where: bytes) -> str:
        """The plaintext; `SealBroken` if no key of the file has that id, or the value was
        altered or belongs to another place."""
        cipher = self._ciphers.get(sealed.key_id)
        if cipher is None:
            raise SealBroken(f"sealed under key {sealed.key_id}, which {SETTING} does not hold")
        blob = bytes(sealed.blob)
        try:
            return cipher.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], where).decode()
        except (InvalidTag, ValueError, UnicodeDecodeError):
            raise SealBroken(
                f"a value sealed under key {sealed.key_id} does not open here "
                "(altered, or copied from another row)"
            ) from None


def new_key_line() -> str:
    """A fresh key as a key file line (32 random bytes, base64)."""
    return base64.b64encode(os.urandom(KEY_BYTES)).decode()
