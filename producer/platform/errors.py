"""The platform's errors, children of the one tree in `consumer_lib.errors`:

WxTokenError
├── CallbackRejected      a push to the authorization-event URL that we refuse (reason)
├── RegistryUnavailable   the platform database could not be reached or refused a write
└── SealBroken            a sealed secret in the database does not open (wrong row, key or bytes)

(A database at a schema revision we do not know, or a bad key file, is a `ConfigError`.)
"""

from __future__ import annotations

from typing import Literal

from consumer_lib.errors import WxTokenError

#: Why a push was refused; each is a label value of the receiver's rejection counter.
RejectReason = Literal[
    "malformed",  # not the XML, query or base64 WeChat sends
    "too_large",  # a body over the receiver's limit
    "bad_signature",  # msg_signature does not match sha1(sorted(token, timestamp, nonce, Encrypt))
    "undecryptable",  # AES or PKCS#7 padding or the length prefix is wrong
    "wrong_appid",  # the decrypted trailer names another component appid
    "stale",  # the timestamp lies outside the accepted window
    "replay",  # this (timestamp, nonce, msg_signature) was seen already
    "unknown_platform",  # no platform with this component appid is configured
]


class CallbackRejected(WxTokenError):
    """A push to the authorization-event URL that is refused and changes nothing."""

    def __init__(self, reason: RejectReason, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason: RejectReason = reason


class RegistryUnavailable(WxTokenError):
    """The platform database could not be reached, timed out or refused a write: nothing was
    stored, so a push must not be answered `success` (WeChat then pushes it again)."""


class SealBroken(WxTokenError):
    """A secret sealed in the database (verify ticket, refresh token) does not open: it was
    sealed under a key the key file no longer holds, copied from another row, or altered."""
