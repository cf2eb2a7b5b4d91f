"""WeCom (企业微信) as qyapi.weixin.qq.com serves it: one token per agent, corp and agent tickets.

Every method takes ``now`` and is called with `SandboxState`'s lock held.

* ``GET /cgi-bin/gettoken?corpid=&corpsecret=``: 41002/41004 missing, 40013 unknown corp,
  40001 a secret of none of its agents. Within its validity the agent's token comes back
  *unchanged* with a shrinking ``expires_in``; a new one only once it has expired (or was
  invalidated early, see `invalidate`).
* ``GET /cgi-bin/get_jsapi_ticket`` (corp ticket, for ``wx.config``) and
  ``GET /cgi-bin/ticket/get?type=agent_config`` (agent ticket, for ``wx.agentConfig``):
  need a live WeCom token (41001 missing, 40014 unknown or invalidated, 42001 expired).
  Each answer, repeated or new, counts against the hourly limits: every ticket call of a
  corp (``corp_tickets_per_hour``) and each agent's calls of each ticket
  (``agent_tickets_per_hour``); over them, 45009. Like the token, a ticket repeats until
  it expires.
* ``GET /cgi-bin/agent/get?access_token=&agentid=``: 301002 when the token belongs to
  another agent, the cheap way to prove every call uses its own agent's token.
"""

from __future__ import annotations

import logging
import secrets

from .config import SandboxConfig, WecomAgent
from .faults import err
from .issuer import CredentialIssuer
from .records import CallCounts, RollingLimit, TicketBook, TokenBook

logger = logging.getLogger(__name__)

WECOM_TICKET_TYPES = frozenset({"corp_jsapi", "agent_config"})
_HOUR_S = 3600.0


class WecomCorps(CredentialIssuer):
    """The WeCom half of the sandbox."""

    platform = "wecom"
    accepts = frozenset({"wecom"})
    invalid_token = (40014, "invalid access_token")
    ticket_types = WECOM_TICKET_TYPES
    invalid_ticket_type = (40058, "invalid parameter: type")

    def __init__(
        self, config: SandboxConfig, tokens: TokenBook, tickets: TicketBook, calls: CallCounts
    ) -> None:
        super().__init__(config, tokens, tickets, calls)
        self.agents = {agent.key: agent for agent in config.agents}
        self._corps = {agent.corp_id for agent in config.agents}
        self._current: dict[str, str] = {}  # agent key -> token
        self._corp_limit = RollingLimit(config.corp_tickets_per_hour, _HOUR_S)
        self._agent_limit = RollingLimit(config.agent_tickets_per_hour, _HOUR_S)
        self.issued = dict.fromkeys(self.agents, 0)

    def agent_of(self, corp_id: object, secret: object) -> WecomAgent | None:
        for agent in self.agents.values():
            if agent.corp_id == corp_id and secrets.compare_digest(
                str(secret).encode(), agent.secret.encode()
            ):
                return agent
        return None

    def gettoken(self, corp_id: str | None, secret: str | None, now: float) -> dict[str, object]:
        if not corp_id:
            return err(41002, "corpid missing")
        if corp_id not in self._corps:
            return err(40013, "invalid corpid")
        if not secret:
            return err(41004, "corpsecret missing")
        agent = self.agent_of(corp_id, secret)
        if agent is None:
            return err(40001, "invalid credential")
        self._calls.add("wecom_gettoken", agent.key)
        token = self._current.get(agent.key)
        record = self._tokens.get(token)
        if token is not None and record is not None and record.alive(now):
            left_s = int(record.expires_at - now)
            if left_s >= 1:
                return {"errcode": 0, "errmsg": "ok", "access_token": token, "expires_in": left_s}
        token = self._tokens.issue(agent.key, "wecom", now, self.config.expires_in_s)
        self._current[agent.key] = token
        self.issued[agent.key] += 1
        logger.info("sandbox issued WeCom token %s... for %s", token[:4], agent.key)
        return {
            "errcode": 0,
            "errmsg": "ok",
            "access_token": token,
            "expires_in": self.config.expires_in_s,
        }

    def ticket(
        self, access_token: str | None, ticket_type: str | None, now: float
    ) -> dict[str, object]:
        """Answer get_jsapi_ticket (``corp_jsapi``) or ticket/get (``agent_config``)."""
        found = self._ticket_caller(access_token, ticket_type, now)
        if isinstance(found, dict):
            return found
        assert access_token is not None
        assert ticket_type is not None
        agent = self.agents[found.owner]
        per_agent = f"{agent.key}#{ticket_type}"
        if ticket_type == "corp_jsapi" and not self._corp_limit.has_room(agent.corp_id, now):
            return err(45009, "api freq out of limit: 400 corp tickets an hour per corp")
        if not self._agent_limit.has_room(per_agent, now):
            limit = self.config.agent_tickets_per_hour
            return err(45009, f"api freq out of limit: {limit} {ticket_type} an hour per agent")
        if ticket_type == "corp_jsapi":
            self._corp_limit.record(agent.corp_id, now)
        self._agent_limit.record(per_agent, now)
        self._calls.add(f"wecom_ticket/{ticket_type}", agent.key)
        return self._ticket_answer(
            agent.key, ticket_type, access_token, now, renew_within_s=0.0, min_expires_in_s=1
        )

    def agent_get(
        self, access_token: str | None, agent_id: str | None, now: float
    ) -> dict[str, object]:
        found = self.lookup(access_token, now)
        if isinstance(found, dict):
            return found
        agent = self.agents[found.owner]
        if agent_id != agent.agent_id:
            return err(301002, "not allow operate another agent with this accesstoken.")
        self._calls.add("wecom_agent_get", agent.key)
        return {"errcode": 0, "errmsg": "ok", "agentid": int(agent.agent_id), "name": agent.key}

    def invalidate(self, agent_key: str, now: float) -> bool:
        """Kill the agent's token early, as WeCom may; the next gettoken issues a new one."""
        record = self._tokens.get(self._current.get(agent_key))
        if record is None or not record.alive(now):
            return False
        record.valid_until = now
        return True
