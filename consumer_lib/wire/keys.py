"""The Redis key layout, in one place: every key wxtoken reads or writes is named here.

{prefix}:token:{app_id}:{kind}            the latest TokenUpdate as JSON, expiring with the token
{prefix}:version:{app_id}:{kind}          the last version handed out (no TTL, survives expiry)
{prefix}:known                            set of "{app_id}:{kind}" ever written, for `status`
{prefix}:leader                           "{epoch}|{owner}" of the lease holder (PX)
{prefix}:leader_epoch                     counter of lease acquisitions
{prefix}:budget:{app_id}:{api}:{YYYYMMDD} refreshes spent (and fetches recorded) that UTC day
{prefix}:budget:{app_id}:{api}:last       last forced refresh, UNIX milliseconds
{prefix}:budget:{app_id}:{api}:spend:{id} one spend's answer, 10 min: a replay spends nothing
{prefix}:requested:{app_id}:{api}:{YYYYMMDD}  refreshes caused by refresh requests that UTC day
{prefix}:requested:{app_id}:{api}:last        last request-caused refresh, UNIX milliseconds
{prefix}:requested:{app_id}:{api}:spend:{id}  one such spend's answer, 10 min (as above)
{prefix}:verify_keys                      the producers' verify key ids, comma-separated (announced)
{prefix}:audit                            stream, the audit trail, newest last
{prefix}:ticket_budget:corp:{corp_id}     WeCom corp tickets of the corp (hourly window)
{prefix}:ticket_budget:agent:{corp_id}/{agent_id}:{kind}   that agent's calls of one kind
{prefix}:control:seen:{request_id}        a control request the leader took (SET NX EX): no replay
{prefix}:control:answer:{request_id}      the leader's ControlAnswer as JSON, for the CLI (EX)
{prefix}:control:spacing:{action}:{app_id} the last such request acted on (SET NX EX): spacing
{prefix}:upstream_errors                  hash "{app_id}:{kind}" -> last failed fetch, as JSON
{prefix}:served                           JSON: the app ids the current leader serves, by whom
{prefix}:clock_skew                       hash: producer id -> its clock minus Redis's (JSON)
{prefix}:platform:events                  pub/sub channel: a platform push was stored (a hint)

`{api}` is the WeChat endpoint the app uses (`stable` or `classic`, `producer.apps.TokenApi`).
Nothing else builds a key string: the producer's modules, the ops CLI and the subscriber's
snapshot reads all ask a `KeyLayout`.
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

    def budget_count(self, app_id: str, api: str, day: str) -> str:
        """Spends that UTC `day` ("YYYYMMDD") for the app's `api` ("stable" or "classic")."""
        return f"{self.prefix}:budget:{app_id}:{api}:{day}"

    def budget_last_forced(self, app_id: str, api: str) -> str:
        """When the app's last forced refresh happened, UNIX milliseconds."""
        return f"{self.prefix}:budget:{app_id}:{api}:last"

    @property
    def audit(self) -> str:
        return f"{self.prefix}:audit"

    def ticket_budget_corp(self, corp_id: str) -> str:
        """The hourly window of a WeCom corp's corp-ticket calls."""
        return f"{self.prefix}:ticket_budget:corp:{corp_id}"

    def ticket_budget_agent(self, wecom_agent: str, kind: str) -> str:
        """The hourly window of one agent's (`"{corp_id}/{agent_id}"`) calls of `kind`."""
        return f"{self.prefix}:ticket_budget:agent:{wecom_agent}:{kind}"

    def budget_spend(self, app_id: str, api: str, spend_id: str) -> str:
        """One spend's answer, kept a while so that a replayed script spends nothing."""
        return f"{self.prefix}:budget:{app_id}:{api}:spend:{spend_id}"

    def requested_count(self, app_id: str, api: str, day: str) -> str:
        """Request-caused refreshes that UTC `day` of the app's `api` (its own cap)."""
        return f"{self.prefix}:requested:{app_id}:{api}:{day}"

    def requested_last(self, app_id: str, api: str) -> str:
        """When the app's last request-caused refresh was spent, UNIX milliseconds."""
        return f"{self.prefix}:requested:{app_id}:{api}:last"

    def requested_spend(self, app_id: str, api: str, spend_id: str) -> str:
        """One request-caused spend's answer, kept so that a replayed script spends nothing."""
        return f"{self.prefix}:requested:{app_id}:{api}:spend:{spend_id}"

    @property
    def verify_keys(self) -> str:
        """The verify key ids the producers announce, comma-separated."""
        return f"{self.prefix}:verify_keys"

    @property
    def served(self) -> str:
        return f"{self.prefix}:served"

    @property
    def clock_skew(self) -> str:
        return f"{self.prefix}:clock_skew"

    @property
    def platform_events(self) -> str:
        """The channel the platform receiver publishes a stored push's id on."""
        return f"{self.prefix}:platform:events"

    @staticmethod
    def member(app_id: str, kind: TokenKind = TokenKind.ACCESS_TOKEN) -> str:
        return f"{app_id}:{kind}"

    @staticmethod
    def parse_member(member: str) -> tuple[str, TokenKind]:
        app_id, _, kind = member.rpartition(":")
        return app_id, TokenKind(kind)

    def control_seen(self, request_id: str) -> str:
        """A control request the leader took (SET NX EX): its replays are refused."""
        return f"{self.prefix}:control:seen:{request_id}"

    def control_answer(self, request_id: str) -> str:
        """The leader's `ControlAnswer` to a control request, for the CLI."""
        return f"{self.prefix}:control:answer:{request_id}"

    def control_spacing(self, action: str, app_id: str) -> str:
        """Held (SET NX EX) while `action` on `app_id` must wait: one app's clears spaced."""
        return f"{self.prefix}:control:spacing:{action}:{app_id}"

    @property
    def upstream_errors(self) -> str:
        """Hash of the last failed fetch per "{app_id}:{kind}"
        (`producer.store.upstream_failures`)."""
        return f"{self.prefix}:upstream_errors"
