"""Announcing a credential's token on the exchange, and when to announce it again.

Every credential's held token is published when it is issued, then re-published every
`republish_interval_s` (at a phase of its own, so 30,000 credentials do not all re-publish
in the same second) and when refresh requests show a service holding an old one.
"""

from __future__ import annotations

from collections.abc import Callable

from consumer_lib.wire.update import TokenUpdate
from producer.refresh.state import CredentialState


class Republisher:
    """Publishes for every credential of one producer (through the publisher's queue)."""

    __slots__ = ("_publish",)

    def __init__(self, publish: Callable[[TokenUpdate], None]) -> None:
        self._publish = publish

    def publish(self, cred: CredentialState, update: TokenUpdate, now_s: float) -> None:
        """Publish `update` (`cred`'s held or new token) and schedule the next re-publish."""
        self._publish(update)
        cred.last_publish_s = now_s
        cred.republish_at = cred.timing.next_republish_at(now_s, cred.republish_phase_s)
