"""What the sandbox's two platforms (`wechat.OfficialAccounts`, `wecom.WecomCorps`) share:
the books they issue into, checking a presented access token, and answering a ticket call
with the owner's current ticket (a new one when it is due).

Every method takes ``now`` and is called with `SandboxState`'s lock held.
"""

from __future__ import annotations

from typing import ClassVar

from .config import SandboxConfig
from .faults import err
from .records import CallCounts, TicketBook, TokenBook, TokenRecord


class CredentialIssuer:
    """The base of a platform: its tokens are `platform`'s; a dead one gets `invalid_token`."""

    platform: ClassVar[str]  # "wechat" or "wecom", as in `TokenRecord.platform`
    #: The `TokenRecord.platform`s whose tokens its APIs take (an official account's also
    #: take a third-party platform's authorizer tokens, as WeChat's do).
    accepts: ClassVar[frozenset[str]]
    invalid_token: ClassVar[tuple[int, str]]  # (errcode, errmsg) for an unknown or dead token
    ticket_types: ClassVar[frozenset[str]]  # the ticket types it issues
    invalid_ticket_type: ClassVar[tuple[int, str]]  # (errcode, errmsg) for any other type

    def __init__(
        self, config: SandboxConfig, tokens: TokenBook, tickets: TicketBook, calls: CallCounts
    ) -> None:
        self.config, self._tokens, self._tickets, self._calls = config, tokens, tickets, calls

    def lookup(self, access_token: str | None, now: float) -> TokenRecord | dict[str, object]:
        """The record of a live token of this platform, else the platform's error answer.

        Missing: 41001; expired: 42001; unknown, of the other platform, superseded or
        invalidated: `invalid_token`."""
        if not access_token:
            return err(41001, "access_token missing")
        record = self._tokens.get(access_token)
        if record is None or record.platform not in self.accepts:
            return err(*self.invalid_token)
        if now >= record.expires_at:
            return err(42001, "access_token expired")
        if now >= record.valid_until:
            return err(*self.invalid_token)
        return record

    def _ticket_caller(
        self, access_token: str | None, ticket_type: str | None, now: float
    ) -> TokenRecord | dict[str, object]:
        """The live token asking for a ticket of a known type, else the error answer."""
        found = self.lookup(access_token, now)
        if isinstance(found, dict):
            return found
        if ticket_type not in self.ticket_types:
            return err(*self.invalid_ticket_type)
        return found

    def _ticket_answer(
        self,
        owner: str,
        ticket_type: str,
        access_token: str,
        now: float,
        *,
        renew_within_s: float,
        min_expires_in_s: int,
    ) -> dict[str, object]:
        """The answer carrying `owner`'s current `ticket_type` ticket.

        A new one, fetched with `access_token` and counted as `issued/<type>`, when none is
        held or the held one has `renew_within_s` or less left (0: only once it has expired);
        ``expires_in`` is its remaining whole seconds, at least `min_expires_in_s`."""
        held = self._tickets.current_of(owner, ticket_type)
        if held is None or held[1].expires_at - now <= renew_within_s:
            lifetime_s = self.config.expires_in_s
            value = self._tickets.issue(owner, ticket_type, access_token, now, lifetime_s)
            self._calls.add(f"issued/{ticket_type}", owner)
            expires_at = now + lifetime_s
        else:
            value, expires_at = held[0], held[1].expires_at
        left_s = max(min_expires_in_s, int(expires_at - now))
        return {"errcode": 0, "errmsg": "ok", "ticket": value, "expires_in": left_s}
