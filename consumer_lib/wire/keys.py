"""The Redis key layout, in one place.

{prefix}:token:{app_id}:{kind}     the latest TokenUpdate as JSON, expiring with the token
{prefix}:version:{app_id}:{kind}   the last version handed out (no TTL, survives expiry)
{prefix}:known                     set of "{app_id}:{kind}" ever written, for `status`
{prefix}:leader                    "{epoch}|{owner}" of the producer holding the lease (PX)
{prefix}:leader_epoch              counter of lease acquisitions
{prefix}:served                    JSON: the app ids the current leader serves, by whom
"""

from __future__ import annotations

from dataclasses import dataclass

from .update import TokenKind


@dataclass(frozen=True)
class KeyLayout:
    """Names of the Redis keys under one prefix."""

    prefix: str = "wxtoken"

    def token(self, app_id: str, kind: TokenKind = TokenKind.ACCESS_TOKEN) -> str:
        return f"{self.prefix}:token:{app_id}:{kind}"

    def version(self, app_id: str, kind: TokenKind = TokenKind.ACCESS_TOKEN) -> str:
        return f"{self.prefix}:version:{app_id}:{kind}"

    @property
    def known(self) -> str:
        return f"{self.prefix}:known"

    @property
    def leader(self) -> str:
        return f"{self.prefix}:leader"

    @property
    def leader_epoch(self) -> str:
        return f"{self.prefix}:leader_epoch"

    @property
    def served(self) -> str:
        return f"{self.prefix}:served"

    @staticmethod
    def member(app_id: str, kind: TokenKind = TokenKind.ACCESS_TOKEN) -> str:
        return f"{app_id}:{kind}"

    @staticmethod
    def parse_member(member: str) -> tuple[str, TokenKind]:
        app_id, _, kind = member.rpartition(":")
        return app_id, TokenKind(kind)
