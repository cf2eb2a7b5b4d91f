"""Why an update was rejected, as one of a few fixed words (a bounded metrics label)."""

from __future__ import annotations

from .errors import InvalidUpdate

#: (substring of the `InvalidUpdate` message, reason), first match wins.
_REASONS = (
    ("untrusted user", "untrusted_publisher"),
    ("unsigned", "unsigned"),
    ("unknown key", "unknown_key"),
    ("bad signature", "bad_signature"),
    ("exceed", "oversize"),
)
REASONS = (*(reason for _, reason in _REASONS), "malformed")


def rejection_reason(exc: InvalidUpdate) -> str:
    """One of `REASONS`; anything not recognised is `malformed`."""
    text = str(exc)
    return next((reason for needle, reason in _REASONS if needle in text), "malformed")
