"""Signed updates: Ed25519 over the exact bytes of a `TokenUpdate`, in a small envelope.

    {"payload": "<the TokenUpdate JSON>", "key_id": "<16 hex>", "sig": "<base64>"}

The producer and the ops CLI sign with a private key; subscribers (and the producer, for
what it adopts from Redis) verify against one or more public keys, so keys can be rotated
without downtime: add the new public key everywhere, switch the signer, drop the old key.
The signed form is what Redis stores too, so write access to Redis or to the exchange
alone cannot inject a token. `key_id` is the first 16 hex digits of the SHA-256 of the raw
public key. Keys are made, loaded and named with `cryptography`; signatures are checked
with libsodium (PyNaCl): every subscriber process checks every new update, and libsodium's
check costs about two thirds of OpenSSL's (`bench/fanout.py` prints both). An `UpdateCodec`
does the encoding and decoding everywhere; unsigned updates are accepted only by a codec
made with `accept_unsigned=True` (WXTOKEN_INSECURE_ACCEPT_UNSIGNED).
"""

from __future__ import annotations

import base64
import binascii
import errno
import hashlib
import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from ..errors import ConfigError, InvalidUpdate
from ..settings import CommonSettings
from .update import MAX_ENCODED_BYTES, TokenUpdate

log = logging.getLogger(__name__)

_ENVELOPE_KEYS = frozenset({"payload", "key_id", "sig"})
_HEX_DIGITS = frozenset("0123456789abcdef")


def key_id(public_key: Ed25519PublicKey) -> str:
    """A short, stable name of a public key, carried in every envelope."""
    return hashlib.sha256(_raw(public_key)).hexdigest()[:16]


def _raw(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def verifier(public_key: Ed25519PublicKey) -> VerifyKey:
    """libsodium's checker of signatures by `public_key` (see `signature_ok`)."""
    return VerifyKey(_raw(public_key))


def signature_ok(checker: VerifyKey, signature: bytes, payload: bytes) -> bool:
    """Whether `signature` (64 bytes) is `checker`'s key's Ed25519 signature of `payload`."""
    try:
        checker.verify(payload, signature)
    except BadSignatureError:
        return False
    return True


# ------------------------------------------------------------------ key files
def load_private_key(path: Path, *, setting: str = "WXTOKEN_SIGNING_KEY_FILE") -> Ed25519PrivateKey:
    """An Ed25519 private key from a PEM file; problems are one-line `ConfigError`s."""
    data = _read_key_file(path, setting)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ConfigError(f"{setting}: {path} is not an unencrypted PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{setting}: {path} is not an Ed25519 key")
    return key


def load_public_keys(
    paths: Iterable[Path], *, setting: str = "WXTOKEN_VERIFY_KEYS"
) -> list[Ed25519PublicKey]:
    """Ed25519 public keys from PEM files; problems are one-line `ConfigError`s."""
    keys = []
    for path in paths:
        data = _read_key_file(path, setting)
        try:
            key = serialization.load_pem_public_key(data)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise ConfigError(f"{setting}: {path} is not a PEM public key") from None
        if not isinstance(key, Ed25519PublicKey):
            raise ConfigError(f"{setting}: {path} is not an Ed25519 key")
        keys.append(key)
    return keys


def _read_key_file(path: Path, setting: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{setting}: cannot read {path} ({exc.strerror})") from None


def generate_keypair(path: Path) -> tuple[Path, Path]:
    """Write a new private key to `path` (mode 0600) and its public key to `path`.pub
    (0644); refuse to overwrite either. Returns both paths."""
    public_path = path.with_name(path.name + ".pub")
    for target in (path, public_path):  # never leave half a pair behind
        if target.exists():
            raise FileExistsError(errno.EEXIST, "exists", str(target))
    private_key = Ed25519PrivateKey.generate()
    private_pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    for target, data, mode in ((path, private_pem, 0o600), (public_path, public_pem, 0o644)):
        # O_EXCL: never overwrite a key; the mode is set at creation, never world-readable.
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(target, mode)  # the umask may have narrowed it; make it exact
    return path, public_path


# ------------------------------------------------------------------ the codec
class UpdateCodec:
    """Encodes updates (signed when it has a signer) and decodes them (verified when it
    has keys). One instance per process, shared by every thread."""

    def __init__(
        self,
        *,
        signer: Ed25519PrivateKey | None = None,
        verify_keys: Sequence[Ed25519PublicKey] = (),
        accept_unsigned: bool = False,
    ) -> None:
        self._signer = signer
        self._signer_id = key_id(signer.public_key()) if signer is not None else None
        keys = list(verify_keys)
        if signer is not None:
            keys.append(signer.public_key())  # what we sign, we accept
        self._keys = {key_id(k): k for k in keys}
        self._checkers = {name: verifier(k) for name, k in self._keys.items()}
        self.accept_unsigned = accept_unsigned

    @property
    def signs(self) -> bool:
        return self._signer is not None

    @property
    def verifies(self) -> bool:
        return bool(self._keys)

    @property
    def signer_key_id(self) -> str | None:
        """The key id of what this codec signs with, if it signs."""
        return self._signer_id

    @property
    def verify_key_ids(self) -> list[str]:
        """The key ids this codec accepts (its own signer's included), sorted."""
        return sorted(self._keys)

    def encode(self, update: TokenUpdate) -> bytes:
        """The bytes to publish and store: an envelope when signing, else plain JSON."""
        payload = update.encode()
        if self._signer is None:
            return payload
        return seal(self._signer, payload)

    def decode(self, raw: bytes | str) -> TokenUpdate:
        """Verify and parse; anything unsigned (unless accepted), forged, signed by an
        unknown key or malformed raises `InvalidUpdate`."""
        if isinstance(raw, str):
            try:
                raw = raw.encode()
            except UnicodeEncodeError:
                raise InvalidUpdate("update is not valid Unicode text") from None
        if len(raw) > MAX_ENCODED_BYTES:
            raise InvalidUpdate(f"update of {len(raw)} bytes exceeds {MAX_ENCODED_BYTES}")
        envelope = _envelope_of(raw)
        if envelope is None:
            update = TokenUpdate.decode(raw)  # garbage is named as such first
            if not self.accept_unsigned:
                raise InvalidUpdate("invalid update: unsigned, and only signed ones are accepted")
            return update
        payload, signer_id, signature = envelope
        checker = self._checkers.get(signer_id)
        if checker is None:
            if self._keys or not self.accept_unsigned:
                raise InvalidUpdate(f"invalid update: signed by unknown key {signer_id}")
            return TokenUpdate.decode(payload)  # insecure mode with no keys: unverified
        if not signature_ok(checker, signature, payload):
            raise InvalidUpdate(f"invalid update: bad signature (key {signer_id})")
        return TokenUpdate.decode(payload)


def seal(signer: Ed25519PrivateKey, payload: bytes, *, domain: bytes = b"") -> bytes:
    """`payload` (UTF-8 JSON) in a signed envelope, the form every signed message takes.
    With a `domain` tag, what is signed is `domain + payload` (the envelope carries only the
    payload): the signature is then good for that kind of message only."""
    envelope = {
        "payload": payload.decode(),
        "key_id": key_id(signer.public_key()),
        "sig": base64.b64encode(signer.sign(domain + payload)).decode(),
    }
    return json.dumps(envelope, separators=(",", ":")).encode()


def unseal(
    raw: bytes, keys: Mapping[str, Ed25519PublicKey], *, what: str, domain: bytes = b""
) -> tuple[bytes, str]:
    """(payload, key id) of an envelope signed by one of `keys` (by key id), over
    `domain + payload`. Anything unsigned, signed by another key or for another domain,
    forged or malformed raises `InvalidUpdate` naming `what`; there is no insecure mode."""
    envelope = _envelope_of(raw, what=what)
    if envelope is None:
        raise InvalidUpdate(f"invalid {what}: unsigned")
    payload, signer_id, signature = envelope
    key = keys.get(signer_id)
    if key is None:
        raise InvalidUpdate(f"invalid {what}: signed by unknown key {signer_id}")
    if not signature_ok(verifier(key), signature, domain + payload):
        raise InvalidUpdate(f"invalid {what}: bad signature (key {signer_id})")
    return payload, signer_id


def _envelope_of(raw: bytes, *, what: str = "update") -> tuple[bytes, str, bytes] | None:
    """(payload, key id, signature) if `raw` is an envelope; None if it is a plain update;
    `InvalidUpdate` if it is neither."""
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None  # not an envelope; TokenUpdate.decode says what it is
    if not isinstance(data, dict) or ("sig" not in data and "payload" not in data):
        return None
    if set(data) != _ENVELOPE_KEYS:
        raise InvalidUpdate(f"invalid {what}: envelope needs exactly payload, key_id and sig")
    payload, signer_id, signature = data["payload"], data["key_id"], data["sig"]
    if (
        not isinstance(payload, str)
        or not isinstance(signer_id, str)
        or not isinstance(signature, str)
    ):
        raise InvalidUpdate(f"invalid {what}: envelope fields must be strings")
    if len(signer_id) != 16 or not _HEX_DIGITS.issuperset(signer_id):
        raise InvalidUpdate(f"invalid {what}: envelope key_id must be 16 hex digits")
    try:
        signature_bytes = base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidUpdate(f"invalid {what}: envelope sig is not base64") from None
    if len(signature_bytes) != 64:
        raise InvalidUpdate(f"invalid {what}: envelope sig is not an Ed25519 signature")
    try:
        payload_bytes = payload.encode()
    except UnicodeEncodeError:
        raise InvalidUpdate(f"invalid {what}: envelope payload is not valid Unicode") from None
    return payload_bytes, signer_id, signature_bytes


#: The codec of a deployment without keys (tests, the sandbox demo): plain JSON both ways.
PLAIN = UpdateCodec(accept_unsigned=True)


def codec_from_settings(settings: CommonSettings, *, must_sign: bool = False) -> UpdateCodec:
    """The codec a program's settings ask for; refuses to run unprotected by accident.

    Without verify keys (or, for a signer, without a signing key) the program stops with
    a `ConfigError` unless WXTOKEN_INSECURE_ACCEPT_UNSIGNED=1, which is logged once. With
    any key configured the flag is ignored (logged): unsigned updates are always refused.
    """
    signer = (
        load_private_key(settings.signing_key_file)
        if settings.signing_key_file is not None
        else None
    )
    verify_keys = load_public_keys(settings.verify_key_files())
    insecure = settings.insecure_accept_unsigned
    if must_sign and signer is None and not insecure:
        raise ConfigError(
            "WXTOKEN_SIGNING_KEY_FILE is not set: updates would go out unsigned "
            "(set WXTOKEN_INSECURE_ACCEPT_UNSIGNED=1 to allow that, e.g. for the sandbox)"
        )
    if signer is None and not verify_keys and not insecure:
        raise ConfigError(
            "WXTOKEN_VERIFY_KEYS is not set: refusing to trust unsigned updates "
            "(set WXTOKEN_INSECURE_ACCEPT_UNSIGNED=1 to allow that, e.g. for the sandbox)"
        )
    if insecure and (verify_keys or signer is not None):
        # Keys are configured: an unsigned update is a forgery, whatever the flag says
        # (a stray .env or variable must not switch verification off).
        log.warning(
            "WXTOKEN_INSECURE_ACCEPT_UNSIGNED is ignored: keys are configured, so unsigned "
            "updates are refused"
        )
        insecure = False
    elif insecure:
        log.warning("WXTOKEN_INSECURE_ACCEPT_UNSIGNED is set: unsigned updates are accepted")
    return UpdateCodec(signer=signer, verify_keys=verify_keys, accept_unsigned=insecure)
