"""`SandboxState`: all of WeChat's and WeCom's semantics, without HTTP, behind one lock."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import replace

from .config import SandboxConfig
from .faults import COMPONENT_ENDPOINTS, TOKEN_ENDPOINTS, Fault, err
from .openplatform import OpenPlatforms
from .records import CallCounts, TicketBook, TokenBook, TokenRecord
from .wechat import OfficialAccounts
from .wecom import WecomCorps

logger = logging.getLogger(__name__)

_SIGNED_TICKETS = frozenset({"jsapi", "corp_jsapi", "agent_config"})


class SandboxState:
    """The sandbox's whole state. Thread-safe: every method takes one lock."""

    def __init__(self, config: SandboxConfig, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self._clock = clock
        self._lock = threading.Lock()
        self._reset_locked()

    def _reset_locked(self) -> None:
        self._tokens = TokenBook()
        self._tickets = TicketBook()
        self._calls = CallCounts()
        self._wechat = OfficialAccounts(self.config, self._tokens, self._tickets, self._calls)
        self._wecom = WecomCorps(self.config, self._tokens, self._tickets, self._calls)
        self._open = OpenPlatforms(self.config, self._tokens)
        #: Pushes sent: (component appid, InfoType) -> [answered success, not].
        self._pushes: dict[tuple[str, str], list[int]] = {}
        self._fault: Fault | None = None

    def issued_tokens(self) -> list[str]:
        """Every access token on record: tests check that none of them leaks anywhere."""
        with self._lock:
            return self._tokens.values()

    # ------------------------------------------------------------------ official accounts
    def classic_token(
        self, appid: str | None, secret: str | None, grant_type: str | None
    ) -> dict[str, object]:
        with self._lock:
            return self._wechat.classic_token(appid, secret, grant_type, self._clock())

    def stable_token(self, body: object) -> dict[str, object]:
        """Answer a stable_token call; ``body`` is the raw request body or its parsed JSON."""
        with self._lock:
            return self._wechat.stable_token(body, self._clock())

    def ticket(self, access_token: str | None, ticket_type: str | None) -> dict[str, object]:
        """Answer getticket (``jsapi`` or ``wx_card``) for an official account's token."""
        with self._lock:
            return self._wechat.ticket(access_token, ticket_type, self._clock())

    def clear_quota(self, body: object) -> dict[str, object]:
        with self._lock:
            return self._wechat.clear_quota(body, self._clock())

    # ------------------------------------------------------------------ WeCom
    def wecom_token(self, corp_id: str | None, secret: str | None) -> dict[str, object]:
        with self._lock:
            return self._wecom.gettoken(corp_id, secret, self._clock())

    def wecom_ticket(self, access_token: str | None, ticket_type: str | None) -> dict[str, object]:
        """Answer a WeCom ticket call: ``corp_jsapi`` or ``agent_config``."""
        with self._lock:
            return self._wecom.ticket(access_token, ticket_type, self._clock())

    def wecom_agent_get(self, access_token: str | None, agent_id: str | None) -> dict[str, object]:
        with self._lock:
            return self._wecom.agent_get(access_token, agent_id, self._clock())

    # ------------------------------------------------------------------ open platform
    def component_token(self, body: object) -> dict[str, object]:
        """api_component_token; ``body`` is the raw request body or its parsed JSON."""
        parsed = _object(body)
        if parsed is None:
            return err(47001, "data format error")
        with self._lock:
            return self._open.component_token(parsed, self._clock())

    def component_call(
        self, endpoint: str, access_token: str | None, body: object
    ) -> dict[str, object]:
        """api_query_auth, api_authorizer_token, api_get_authorizer_list (by `endpoint`)."""
        parsed = _object(body)
        if parsed is None:
            return err(47001, "data format error")
        with self._lock:
            now = self._clock()
            if endpoint == "query_auth":
                return self._open.query_auth(access_token, parsed, now)
            if endpoint == "authorizer_token":
                return self._open.authorizer_token(access_token, parsed, now)
            return self._open.authorizer_list(access_token, parsed, now)

    def start_push_ticket(self, body: object) -> dict[str, object]:
        parsed = _object(body)
        if parsed is None:
            return err(47001, "data format error")
        with self._lock:
            return self._open.start_push_ticket(parsed)

    def next_ticket(self, component_appid: str) -> str | None:
        """The new verify ticket a push now carries (None: pushes stopped)."""
        with self._lock:
            return self._open.next_ticket(component_appid, self._clock())

    def record_push(self, component_appid: str, info_type: str, delivered: bool) -> None:
        with self._lock:
            counts = self._pushes.setdefault((component_appid, info_type), [0, 0])
            counts[0 if delivered else 1] += 1

    def pushes(self, component_appid: str, info_type: str) -> tuple[int, int]:
        """Pushes of `info_type` sent to the platform: (answered success, not)."""
        with self._lock:
            delivered, failed = self._pushes.get((component_appid, info_type), [0, 0])
        return delivered, failed

    def platform_known(self, component_appid: str) -> bool:
        return component_appid in self._open.platforms

    def authorize(self, component_appid: str, authorizer_appid: str) -> dict[str, object]:
        """A customer authorizes (or re-authorizes): the event's fields."""
        with self._lock:
            return self._open.authorize(component_appid, authorizer_appid, self._clock())

    def seed_authorizers(
        self, component_appid: str, prefix: str, count: int
    ) -> list[dict[str, str]]:
        with self._lock:
            return self._open.seed(component_appid, prefix, count, self._clock())

    def revoke(self, component_appid: str, authorizer_appid: str) -> dict[str, object] | None:
        with self._lock:
            return self._open.revoke(component_appid, authorizer_appid, self._clock())

    def stop_pushes(self, component_appid: str) -> bool:
        with self._lock:
            return self._open.stop_pushes(component_appid)

    def current_ticket(self, component_appid: str) -> str | None:
        """The latest verify ticket pushed to the platform (tests compare it)."""
        with self._lock:
            return self._open.platforms[component_appid].ticket

    # ------------------------------------------------------------------ both platforms
    def _lookup(self, access_token: str | None, now: float) -> TokenRecord | dict[str, object]:
        record = self._tokens.get(access_token)
        if record is not None and record.platform == "wecom":
            return self._wecom.lookup(access_token, now)
        return self._wechat.lookup(access_token, now)

    def check(self, access_token: str | None) -> dict[str, object]:
        """Answer getcallbackip: the IP list for a live token (either platform), else the error."""
        with self._lock:
            found = self._lookup(access_token, self._clock())
            if isinstance(found, dict):
                return found
            self._calls.add("getcallbackip", found.owner)
        return {"ip_list": ["127.0.0.1"]}

    def is_valid(self, access_token: str) -> bool:
        with self._lock:
            return isinstance(self._lookup(access_token, self._clock()), TokenRecord)

    def owner_of(self, access_token: str | None) -> str | None:
        """Whose token this is (an appid or ``corp_id/agent_id``), if the sandbox issued it."""
        with self._lock:
            record = self._tokens.get(access_token)
        return None if record is None else record.owner

    def ticket_status(self, ticket: str) -> dict[str, object]:
        """Whether ``ticket`` is one the sandbox issued and still accepts, and whose it is."""
        with self._lock:
            record, now = self._tickets.get(ticket), self._clock()
        if record is None:
            return {"valid": False, "reason": "unknown ticket"}
        valid = now < record.expires_at
        return {
            "valid": valid,
            "reason": None if valid else "expired",
            "owner": record.owner,
            "type": record.ticket_type,
            "expires_in": max(0, int(record.expires_at - now)),
            "fetched_with": record.fetched_with[:4] + "...",
        }

    def verify_signature(
        self, owner: str, ticket_type: str, url: str, noncestr: str, timestamp: str, signature: str
    ) -> bool:
        """True when ``signature`` is a JS-SDK signature by a live ticket of ``owner``."""
        if ticket_type not in _SIGNED_TICKETS or "#" in url:
            return False
        with self._lock:
            held = self._tickets.current_of(owner, ticket_type)
            now = self._clock()
        if held is None or held[1].expires_at <= now:
            return False
        plain = f"jsapi_ticket={held[0]}&noncestr={noncestr}&timestamp={timestamp}&url={url}"
        return hashlib.sha1(plain.encode(), usedforsecurity=False).hexdigest() == signature

    def invalidate(self, owner: str) -> bool:
        """Kill an app's, agent's, platform's (its component token) or authorizer's
        (``component_appid/authorizer_appid``) current token early; False when it held none
        alive."""
        with self._lock:
            now = self._clock()
            if owner in self._wecom.agents:
                return self._wecom.invalidate(owner, now)
            if self._open.invalidate(owner, now):
                return True
            return self._wechat.invalidate(owner, now)

    # ------------------------------------------------------------------ control
    def stats(self) -> dict[str, object]:
        with self._lock:
            return {
                "fetches": {appid: dict(c) for appid, c in self._wechat.fetches.items()},
                "issued": dict(self._wechat.issued),
                "wecom_issued": dict(self._wecom.issued),
                "calls": self._calls.as_json(),
                "fault": None if self._fault is None else self._fault.as_json(),
                "platforms": self._open.stats(),
            }

    def calls(self, endpoint: str, owner: str) -> int:
        """Answered calls of ``endpoint`` (e.g. ``getticket/jsapi``) for one credential."""
        with self._lock:
            return self._calls.get(endpoint, owner)

    def set_fault(self, fault: Fault | None) -> None:
        with self._lock:
            self._fault = None if fault is None or fault.mode == "none" else fault
        logger.info("sandbox fault set to %s", fault)

    def owners(self, endpoint: str, params: Mapping[str, object]) -> tuple[str, ...]:
        """Who a request is on behalf of, for fault matching: appid, corp id, agent key."""
        if endpoint in ("token", "stable_token", "clear_quota"):
            appid = params.get("appid")
            return (appid,) if isinstance(appid, str) else ()
        if endpoint in COMPONENT_ENDPOINTS:
            names = (params.get("component_appid"), params.get("authorizer_appid"))
            return tuple(n for n in names if isinstance(n, str))
        with self._lock:
            if endpoint == "wecom_gettoken":
                corp_id = params.get("corpid")
                agent = self._wecom.agent_of(corp_id, params.get("corpsecret"))
                named = (corp_id,) if isinstance(corp_id, str) else ()
                return named + (() if agent is None else (agent.key,))
            record = self._tokens.get(str(params.get("access_token") or ""))
            if record is None:
                return ()
            if record.platform == "wecom":
                return (record.owner.split("/")[0], record.owner)
            return (record.owner,)

    def take_fault(self, *owners: str | None, endpoint: str = "token") -> Fault | None:
        """The fault a request to ``endpoint`` for ``owners`` suffers now, if any; counts down."""
        named = tuple(o for o in owners if o)
        with self._lock:
            fault = self._fault
            if fault is None or not fault.hits(endpoint, named):
                return None
            if fault.count is not None:
                self._fault = replace(fault, count=fault.count - 1) if fault.count > 1 else None
            if fault.mode != "timeout":
                for owner in named:
                    if endpoint in TOKEN_ENDPOINTS and owner in self._wechat.fetches:
                        self._wechat.fetches[owner]["rejected"] += 1
                    self._calls.add(f"rejected/{endpoint}", owner)
        logger.info("sandbox fault %s hit a %s request for %s", fault.mode, endpoint, named)
        return fault

    def reset(self) -> None:
        with self._lock:
            self._reset_locked()
        logger.info("sandbox reset")


def _object(body: object) -> dict[str, object] | None:
    """A JSON object from a raw body (or an already parsed one); None for anything else."""
    if isinstance(body, bytes | str):
        try:
            body = json.loads(body)
        except ValueError:
            return None
    return body if isinstance(body, dict) else None
