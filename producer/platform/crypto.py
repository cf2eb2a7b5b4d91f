"""WeChat's message crypto for the authorization-event URL, with `cryptography`.

    msg_signature = sha1("".join(sorted([token, timestamp, nonce, Encrypt])))   (hex)
    key           = base64decode(EncodingAESKey + "=")   (32 bytes), IV = key[:16]
    Encrypt       = base64(AES-256-CBC(PKCS#7 to 32-byte blocks(
                        16 random bytes + len(xml) as 4 bytes big endian + xml + appid)))

Every way a push can be wrong raises `CallbackRejected` with its reason: a bad signature
(`bad_signature`), a value that is not base64 (`malformed`), ciphertext, padding or length
prefix that do not decrypt (`undecryptable`), another platform's appid (`wrong_appid`). A
bad EncodingAESKey is the operator's mistake, not a push's: `ConfigError` at construction.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import struct

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from consumer_lib.errors import ConfigError
from producer.platform.errors import CallbackRejected

#: An EncodingAESKey: 43 characters of base64's alphabet (32 bytes once "=" is added).
ENCODING_AES_KEY = re.compile(r"^[A-Za-z0-9+/]{43}$")
_RANDOM_BYTES = 16
_BLOCK_BITS = 256  # WeChat pads to 32 bytes, not AES's 16
_PREFIX = _RANDOM_BYTES + 4


def msg_signature(token: str, timestamp: str, nonce: str, encrypt: str) -> str:
    """WeChat's signature of a push or a reply: sha1 of the four values, sorted and joined."""
    joined = "".join(sorted([token, timestamp, nonce, encrypt]))
    return hashlib.sha1(joined.encode(), usedforsecurity=False).hexdigest()


def aes_key(encoding_aes_key: str) -> bytes:
    """The 32-byte AES key an EncodingAESKey stands for; `ConfigError` if it is not one."""
    if not ENCODING_AES_KEY.fullmatch(encoding_aes_key):
        raise ConfigError(
            f"an EncodingAESKey is 43 characters of A-Z a-z 0-9 + / "
            f"(this one has {len(encoding_aes_key)})"
        )
    key = base64.b64decode(encoding_aes_key + "=")
    assert len(key) == 32  # 43 base64 characters and one "=" are 32 bytes
    return key


class MessageCrypto:
    """One platform's crypto: its token, EncodingAESKey and component appid."""

    def __init__(self, *, token: str, encoding_aes_key: str, appid: str) -> None:
        if not token or not token.isprintable() or any(c.isspace() for c in token):
            raise ConfigError("a platform token is non-empty, printable, without whitespace")
        self._token = token
        self._key = aes_key(encoding_aes_key)
        self.appid = appid
        self._appid_bytes = appid.encode()

    def __repr__(self) -> str:
        return f"MessageCrypto(appid={self.appid!r})"

    def signature(self, timestamp: str, nonce: str, encrypt: str) -> str:
        return msg_signature(self._token, timestamp, nonce, encrypt)

    def verify(self, signature: str, timestamp: str, nonce: str, encrypt: str) -> None:
        """Raise `CallbackRejected("bad_signature")` unless `signature` signs the values."""
        expected = self.signature(timestamp, nonce, encrypt)
        if not hmac.compare_digest(expected.encode(), signature.lower().encode()):
            raise CallbackRejected("bad_signature")

    def _cipher(self) -> Cipher[modes.CBC]:
        return Cipher(algorithms.AES(self._key), modes.CBC(self._key[:16]))

    def decrypt(self, encrypt: str) -> str:
        """The XML inside `encrypt` (base64), after checking padding, length and appid."""
        try:
            sealed = base64.b64decode(encrypt, validate=True)
        except (binascii.Error, ValueError):
            raise CallbackRejected("malformed", "Encrypt is not base64") from None
        if not sealed or len(sealed) % 16:
            raise CallbackRejected("undecryptable", "ciphertext is not whole AES blocks")
        decryptor = self._cipher().decryptor()
        padded = decryptor.update(sealed) + decryptor.finalize()
        unpadder = padding.PKCS7(_BLOCK_BITS).unpadder()
        try:
            plain = unpadder.update(padded) + unpadder.finalize()
        except ValueError:
            raise CallbackRejected("undecryptable", "bad PKCS#7 padding") from None
        if len(plain) < _PREFIX:
            raise CallbackRejected("undecryptable", "shorter than its prefix")
        (length,) = struct.unpack(">I", plain[_RANDOM_BYTES:_PREFIX])
        if _PREFIX + length > len(plain):
            raise CallbackRejected("undecryptable", "length prefix beyond the message")
        body, trailer = plain[_PREFIX : _PREFIX + length], plain[_PREFIX + length :]
        if not hmac.compare_digest(trailer, self._appid_bytes):
            raise CallbackRejected("wrong_appid", "the message names another component appid")
        try:
            return body.decode("utf-8")
        except UnicodeDecodeError:
            raise CallbackRejected("undecryptable", "the message is not UTF-8") from None

    def encrypt(self, xml: str, *, random_prefix: bytes | None = None) -> str:
        """`xml` sealed as WeChat seals it; `random_prefix` (16 bytes) only for test vectors."""
        prefix = os.urandom(_RANDOM_BYTES) if random_prefix is None else random_prefix
        if len(prefix) != _RANDOM_BYTES:
            raise ValueError("the random prefix is 16 bytes")
        body = xml.encode("utf-8")
        plain = prefix + struct.pack(">I", len(body)) + body + self._appid_bytes
        padder = padding.PKCS7(_BLOCK_BITS).padder()
        padded = padder.update(plain) + padder.finalize()
        encryptor = self._cipher().encryptor()
        return base64.b64encode(encryptor.update(padded) + encryptor.finalize()).decode("ascii")

    def push(
        self, xml: str, *, timestamp: str, nonce: str, random_prefix: bytes | None = None
    ) -> tuple[str, bytes]:
        """A push as WeChat POSTs it to the authorization-event URL: its `msg_signature`
        (for the query) and its body `<xml><AppId/><Encrypt/></xml>` (the sandbox's pushes)."""
        encrypt = self.encrypt(xml, random_prefix=random_prefix)
        body = (
            f"<xml><AppId><![CDATA[{self.appid}]]></AppId>"
            f"<Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"
        )
        return self.signature(timestamp, nonce, encrypt), body.encode()

    def reply(
        self, xml: str, *, timestamp: str, nonce: str, random_prefix: bytes | None = None
    ) -> str:
        """The signed, encrypted reply envelope WeChat expects for a passive reply (and the
        body the sandbox pushes, with its query's `msg_signature`)."""
        encrypt = self.encrypt(xml, random_prefix=random_prefix)
        signature = self.signature(timestamp, nonce, encrypt)
        return (
            f"<xml><Encrypt><![CDATA[{encrypt}]]></Encrypt>"
            f"<MsgSignature><![CDATA[{signature}]]></MsgSignature>"
            f"<TimeStamp>{timestamp}</TimeStamp>"
            f"<Nonce><![CDATA[{nonce}]]></Nonce></xml>"
        )
