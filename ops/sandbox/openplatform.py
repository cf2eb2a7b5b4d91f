"""Third-party platforms (the open platform) as WeChat serves them.

Every method takes ``now`` and is called with `SandboxState`'s lock held. Bodies are JSON
objects (anything else: 47001); the four calls after the component token take
``?component_access_token=``.

* ``api_component_token`` {component_appid, component_appsecret, component_verify_ticket}:
  needs the latest pushed ticket (no ticket pushed yet, or the latest older than
  ``ticket_lifetime_s``: 61005; any other value: 61006); a new component token retires the
  previous one ``overlap_s`` later.
* ``api_query_auth`` {component_appid, authorization_code}: the authorizer's first token
  and its refresh token, while the code lives (61010 after; 61009 for an unknown code).
* ``api_authorizer_token`` {component_appid, authorizer_appid, authorizer_refresh_token}: a
  new authorizer token, the same refresh token; 61023 for a refresh token that is not the
  authorizer's current one (revoked, replaced by a re-authorization, or never issued).
* ``api_get_authorizer_list`` {component_appid, offset, count <= 500}: the authorized ones,
  ``refresh_token`` empty while the code was never redeemed.
* ``api_start_push_ticket`` {component_appid, component_secret}: pushes resume (and one
  goes out at once).

Controls (``/sandbox/platform/*``) make a customer authorize (`authorized`, or
`updateauthorized` when already authorized: a new refresh token replaces the old), revoke
(`unauthorized`: the refresh token and tokens die), stop pushes, and seed many customers
who authorized long ago (their refresh tokens returned, nothing pushed).
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass, field

from .config import SandboxConfig, SandboxPlatform
from .faults import err
from .records import TokenBook, new_secret_string

logger = logging.getLogger(__name__)

MAX_LIST_COUNT = 500
_INVALID_TOKEN = (40001, "invalid credential, access_token is invalid or not latest")


@dataclass
class Authorizer:
    appid: str
    authorized: bool = True
    auth_time: int = 0
    code: str = ""
    code_expires_at: float = 0.0
    #: Issued when the code is redeemed; "" until then and after a revocation.
    refresh_token: str = ""
    token: str | None = None


@dataclass
class PlatformState:
    config: SandboxPlatform
    #: The latest pushed verify ticket and when it was pushed.
    ticket: str | None = None
    ticket_at: float = 0.0
    pushes_enabled: bool = True
    component_token: str | None = None
    authorizers: dict[str, Authorizer] = field(default_factory=dict)
    pushed: int = 0


def _ticket() -> str:
    return "ticket@@@" + secrets.token_urlsafe(60)


class OpenPlatforms:
    """The open-platform half of the sandbox."""

    def __init__(self, config: SandboxConfig, tokens: TokenBook) -> None:
        self.config, self._tokens = config, tokens
        self.platforms = {p.component_appid: PlatformState(p) for p in config.open_platforms}

    # ------------------------------------------------------------------ helpers
    def _platform(self, body: dict[str, object]) -> PlatformState | dict[str, object]:
        appid = body.get("component_appid")
        if not isinstance(appid, str) or not appid:
            return err(41002, "component_appid missing")
        found = self.platforms.get(appid)
        return err(61011, "invalid component") if found is None else found

    def _caller(
        self, access_token: str | None, body: dict[str, object], now: float
    ) -> PlatformState | dict[str, object]:
        """The platform whose live component token calls, else WeChat's error."""
        found = self._platform(body)
        if isinstance(found, dict):
            return found
        if not access_token:
            return err(41001, "access_token missing")
        record = self._tokens.get(access_token)
        if (
            record is None
            or record.platform != "component"
            or record.owner != found.config.component_appid
        ):
            return err(*_INVALID_TOKEN)
        if now >= record.expires_at:
            return err(42001, "access_token expired")
        if now >= record.valid_until:
            return err(*_INVALID_TOKEN)
        return found

    def _issue_authorizer_token(self, platform: PlatformState, who: Authorizer, now: float) -> str:
        previous = self._tokens.get(who.token)
        if previous is not None:
            previous.valid_until = min(previous.valid_until, now + self.config.overlap_s)
        owner = f"{platform.config.component_appid}/{who.appid}"
        who.token = self._tokens.issue(owner, "authorizer", now, self.config.expires_in_s)
        return who.token

    # ------------------------------------------------------------------ pushes
    def next_ticket(self, appid: str, now: float) -> str | None:
        """A new verify ticket for the push going out now (None: pushes stopped)."""
        platform = self.platforms[appid]
        if not platform.pushes_enabled:
            return None
        platform.ticket, platform.ticket_at = _ticket(), now
        platform.pushed += 1
        return platform.ticket

    def stop_pushes(self, appid: str) -> bool:
        platform = self.platforms.get(appid)
        if platform is None:
            return False
        platform.pushes_enabled = False
        return True

    # ------------------------------------------------------------------ component API
    def component_token(self, body: dict[str, object], now: float) -> dict[str, object]:
        found = self._platform(body)
        if isinstance(found, dict):
            return found
        secret = body.get("component_appsecret")
        if not isinstance(secret, str) or not secret:
            return err(41004, "appsecret missing")
        if not secrets.compare_digest(secret.encode(), found.config.secret.encode()):
            return err(40125, "invalid appsecret")
        ticket = body.get("component_verify_ticket")
        if found.ticket is None or now - found.ticket_at >= self.config.ticket_lifetime_s:
            return err(61005, "component ticket is expired")
        if not isinstance(ticket, str) or not secrets.compare_digest(
            ticket.encode(), found.ticket.encode()
        ):
            return err(61006, "component ticket is invalid")
        previous = self._tokens.get(found.component_token)
        if previous is not None:
            previous.valid_until = min(previous.valid_until, now + self.config.overlap_s)
        appid = found.config.component_appid
        found.component_token = self._tokens.issue(
            appid, "component", now, self.config.expires_in_s
        )
        logger.info("sandbox issued component token %s... for %s", found.component_token[:4], appid)
        return {
            "component_access_token": found.component_token,
            "expires_in": self.config.expires_in_s,
        }

    def query_auth(
        self, access_token: str | None, body: dict[str, object], now: float
    ) -> dict[str, object]:
        found = self._caller(access_token, body, now)
        if isinstance(found, dict):
            return found
        code = body.get("authorization_code")
        who = next((a for a in found.authorizers.values() if a.code and a.code == code), None)
        if who is None or not who.authorized:
            return err(61009, "code is invalid")
        if now >= who.code_expires_at:
            return err(61010, "code is expired")
        if not who.refresh_token:
            who.refresh_token = "refreshtoken@@@" + secrets.token_urlsafe(40)
        token = self._issue_authorizer_token(found, who, now)
        return {
            "authorization_info": {
                "authorizer_appid": who.appid,
                "authorizer_access_token": token,
                "expires_in": self.config.expires_in_s,
                "authorizer_refresh_token": who.refresh_token,
                "func_info": [{"funcscope_category": {"id": 1}}],
            }
        }

    def authorizer_token(
        self, access_token: str | None, body: dict[str, object], now: float
    ) -> dict[str, object]:
        found = self._caller(access_token, body, now)
        if isinstance(found, dict):
            return found
        who = found.authorizers.get(str(body.get("authorizer_appid") or ""))
        refresh = body.get("authorizer_refresh_token")
        if (
            who is None
            or not who.authorized
            or not who.refresh_token
            or not isinstance(refresh, str)
            or not secrets.compare_digest(refresh.encode(), who.refresh_token.encode())
        ):
            return err(61023, "refresh_token is invalid")
        token = self._issue_authorizer_token(found, who, now)
        return {
            "authorizer_access_token": token,
            "expires_in": self.config.expires_in_s,
            "authorizer_refresh_token": who.refresh_token,
        }

    def authorizer_list(
        self, access_token: str | None, body: dict[str, object], now: float
    ) -> dict[str, object]:
        found = self._caller(access_token, body, now)
        if isinstance(found, dict):
            return found
        offset, count = body.get("offset"), body.get("count")
        if type(offset) is not int or type(count) is not int or offset < 0 or count < 1:
            return err(47001, "data format error")
        if count > MAX_LIST_COUNT:
            return err(61003, f"count must be at most {MAX_LIST_COUNT}")
        authorized = [a for a in found.authorizers.values() if a.authorized]
        page = authorized[offset : offset + count]
        return {
            "total_count": len(authorized),
            "list": [
                {
                    "authorizer_appid": a.appid,
                    "refresh_token": a.refresh_token,
                    "auth_time": a.auth_time,
                }
                for a in page
            ],
        }

    def start_push_ticket(self, body: dict[str, object]) -> dict[str, object]:
        found = self._platform(body)
        if isinstance(found, dict):
            return found
        secret = body.get("component_secret")
        if not isinstance(secret, str) or not secrets.compare_digest(
            secret.encode(), found.config.secret.encode()
        ):
            return err(40125, "invalid appsecret")
        found.pushes_enabled = True
        return err(0, "ok")

    # ------------------------------------------------------------------ customers
    def authorize(self, appid: str, authorizer_appid: str, now: float) -> dict[str, object]:
        """A customer (re-)authorizes: a new code (and, for a re-authorization, the old
        refresh token and token die). The event's fields, for the push."""
        platform = self.platforms[appid]
        who = platform.authorizers.get(authorizer_appid)
        info_type = "updateauthorized" if who is not None and who.authorized else "authorized"
        if who is None:
            who = platform.authorizers[authorizer_appid] = Authorizer(authorizer_appid)
        self._kill(who, now)
        who.authorized, who.auth_time = True, int(now)
        who.code = "queryauthcode@@@" + new_secret_string()[:60]
        who.code_expires_at = now + self.config.auth_code_lifetime_s
        return {
            "InfoType": info_type,
            "AuthorizerAppid": authorizer_appid,
            "AuthorizationCode": who.code,
            "AuthorizationCodeExpiredTime": str(int(who.code_expires_at)),
            "PreAuthCode": "preauthcode@@@" + secrets.token_urlsafe(20),
        }

    def seed(self, appid: str, prefix: str, count: int, now: float) -> list[dict[str, str]]:
        """`count` customers who authorized long ago (codes redeemed, no push): their appids
        (``prefix`` and a number) and refresh tokens, for a registry to start from (the
        benchmarks' thousands of authorizers)."""
        platform = self.platforms[appid]
        seeded = []
        for n in range(count):
            who = Authorizer(f"{prefix}{n:08d}", auth_time=int(now))
            who.refresh_token = "refreshtoken@@@" + secrets.token_urlsafe(40)
            platform.authorizers[who.appid] = who
            seeded.append({"authorizer_appid": who.appid, "refresh_token": who.refresh_token})
        return seeded

    def revoke(self, appid: str, authorizer_appid: str, now: float) -> dict[str, object] | None:
        """A customer revokes: refresh token, code and token die. None if not authorized."""
        who = self.platforms[appid].authorizers.get(authorizer_appid)
        if who is None or not who.authorized:
            return None
        self._kill(who, now)
        who.authorized = False
        return {"InfoType": "unauthorized", "AuthorizerAppid": authorizer_appid}

    def invalidate(self, owner: str, now: float) -> bool:
        """Kill the current token of a platform (`owner` its component appid) or of an
        authorizer (``component_appid/authorizer_appid``) early."""
        component, _, authorizer = owner.partition("/")
        platform = self.platforms.get(component)
        if platform is None:
            return False
        value = platform.component_token
        if authorizer:
            who = platform.authorizers.get(authorizer)
            value = None if who is None else who.token
        record = self._tokens.get(value)
        if record is None or not record.alive(now):
            return False
        record.valid_until = min(record.valid_until, now)
        return True

    def _kill(self, who: Authorizer, now: float) -> None:
        who.refresh_token, who.code = "", ""
        record = self._tokens.get(who.token)
        if record is not None:
            record.valid_until = min(record.valid_until, now)

    def stats(self) -> dict[str, object]:
        return {
            appid: {
                "pushed": p.pushed,
                "pushes_enabled": p.pushes_enabled,
                "authorizers": {
                    a.appid: {"authorized": a.authorized, "redeemed": bool(a.refresh_token)}
                    for a in p.authorizers.values()
                },
            }
            for appid, p in self.platforms.items()
        }
