"""Official accounts as WeChat serves them: classic and stable tokens, tickets, clear_quota.

Every method takes ``now`` and is called with `SandboxState`'s lock held.

* ``/cgi-bin/token`` ("classic"): every call issues a new token; the app's previous one
  then stays valid only ``overlap_s`` more seconds (never past its own expiry).
* ``/cgi-bin/stable_token`` ("stable", a token space of its own): normal mode returns the
  same token, ``expires_in`` being its remaining whole seconds, until the last
  ``overlap_s`` seconds of its life; then a new one, the old living to its own expiry.
  ``force_refresh`` kills the old one at once; 20 per app per 24 h (45009), 30 s apart
  (45011). A body that is not a JSON object of strings gets 47001.
* ``/cgi-bin/ticket/getticket?type=jsapi|wx_card``: needs a live token of the app (40001
  superseded or unknown, 42001 expired); the same ticket until its last ``overlap_s``
  seconds. A ticket stays valid to its own expiry whatever happens to that token later.
* ``/cgi-bin/clear_quota/v2`` (JSON ``appid``, ``appsecret``): resets the app's call
  quotas (here: the force_refresh count); ``clear_quota_per_month`` per 30 days, then 48006.
"""

from __future__ import annotations

import json
import logging
import math
import secrets

from .config import SandboxConfig
from .faults import err
from .issuer import CredentialIssuer
from .records import CallCounts, RollingLimit, TicketBook, TokenBook, TokenRecord

logger = logging.getLogger(__name__)

FORCE_REFRESH_PER_DAY = 20
FORCE_REFRESH_MIN_INTERVAL_S = 30.0
TICKET_TYPES = frozenset({"jsapi", "wx_card"})
_DAY_S = 86_400.0
_MONTH_S = 30 * _DAY_S
_INVALID = "invalid credential, access_token is invalid or not latest"


def _parse_body(body: object) -> object:
    if isinstance(body, bytes | str):
        try:
            return json.loads(body)
        except ValueError:
            return None
    return body


class OfficialAccounts(CredentialIssuer):
    """The official-account (and mini-program) half of the sandbox."""

    platform = "wechat"
    accepts = frozenset({"wechat", "authorizer"})
    invalid_token = (40001, _INVALID)
    ticket_types = TICKET_TYPES
    invalid_ticket_type = (40097, "invalid args")

    def __init__(
        self, config: SandboxConfig, tokens: TokenBook, tickets: TicketBook, calls: CallCounts
    ) -> None:
        super().__init__(config, tokens, tickets, calls)
        self._current: dict[tuple[str, str], str] = {}  # (appid, "classic"|"stable") -> token
        self._forced = RollingLimit(FORCE_REFRESH_PER_DAY, _DAY_S)
        self._cleared = RollingLimit(config.clear_quota_per_month, _MONTH_S)
        self.fetches = {
            a: dict.fromkeys(("classic", "stable", "stable_forced", "rejected"), 0)
            for a in config.apps
        }
        self.issued = dict.fromkeys(config.apps, 0)

    def _credentials(
        self, grant_type: object, appid: object, secret: object
    ) -> str | dict[str, object]:
        """The appid when the caller may fetch a token, else WeChat's error answer."""
        if grant_type != "client_credential":
            return err(40002, "invalid grant_type")
        return self._app_and_secret(appid, secret)

    def _app_and_secret(self, appid: object, secret: object) -> str | dict[str, object]:
        if not appid:
            return err(41002, "appid missing")
        expected = self.config.apps.get(str(appid))
        if expected is None:
            return err(40013, "invalid appid")
        if not secret:
            return err(41004, "appsecret missing")
        if not secrets.compare_digest(str(secret).encode(), expected.encode()):
            return err(40125, "invalid appsecret")
        return str(appid)

    def _issue(self, appid: str, api: str, now: float) -> dict[str, object]:
        token = self._tokens.issue(appid, "wechat", now, self.config.expires_in_s)
        self._current[(appid, api)] = token
        self.issued[appid] += 1
        logger.info("sandbox issued %s token %s... for %s", api, token[:4], appid)
        return {"access_token": token, "expires_in": self.config.expires_in_s}

    def classic_token(
        self, appid: str | None, secret: str | None, grant_type: str | None, now: float
    ) -> dict[str, object]:
        checked = self._credentials(grant_type, appid, secret)
        if isinstance(checked, dict):
            return checked
        self.fetches[checked]["classic"] += 1
        previous = self._tokens.get(self._current.get((checked, "classic")))
        if previous is not None:
            previous.valid_until = min(previous.valid_until, now + self.config.overlap_s)
        return self._issue(checked, "classic", now)

    def stable_token(self, body: object, now: float) -> dict[str, object]:
        """Answer a stable_token call; ``body`` is the raw request body or its parsed JSON."""
        body = _parse_body(body)
        if not isinstance(body, dict) or not all(
            isinstance(body.get(k), str | None) for k in ("grant_type", "appid", "secret")
        ):
            return err(47001, "data format error")
        force = body.get("force_refresh", False)
        if not isinstance(force, bool):
            return err(47001, "data format error")
        checked = self._credentials(body.get("grant_type"), body.get("appid"), body.get("secret"))
        if isinstance(checked, dict):
            return checked
        current = self._tokens.get(self._current.get((checked, "stable")))
        if force:
            return self._force(checked, current, now)
        self.fetches[checked]["stable"] += 1
        if current is not None and current.alive(now):
            left_s = current.expires_at - now
            if left_s > self.config.overlap_s:
                return {
                    "access_token": self._current[(checked, "stable")],
                    "expires_in": int(left_s),
                }
        return self._issue(checked, "stable", now)

    def _force(self, appid: str, current: TokenRecord | None, now: float) -> dict[str, object]:
        self.fetches[appid]["stable_forced"] += 1
        if not self._forced.has_room(appid, now):
            return err(
                45009,
                "reach max api daily quota limit: force_refresh is "
                f"allowed {FORCE_REFRESH_PER_DAY} times per app per day",
            )
        last = self._forced.last(appid, now)
        if last is not None and now - last < FORCE_REFRESH_MIN_INTERVAL_S:
            wait_s = math.ceil(FORCE_REFRESH_MIN_INTERVAL_S - (now - last))
            return err(
                45011,
                "api minute-quota reach limit: force_refresh calls must be "
                f"{FORCE_REFRESH_MIN_INTERVAL_S:g} s apart, retry in {wait_s} s",
            )
        self._forced.record(appid, now)
        if current is not None:
            current.valid_until = min(current.valid_until, now)
        return self._issue(appid, "stable", now)

    def ticket(
        self, access_token: str | None, ticket_type: str | None, now: float
    ) -> dict[str, object]:
        found = self._ticket_caller(access_token, ticket_type, now)
        if isinstance(found, dict):
            return found
        assert access_token is not None
        assert ticket_type is not None
        self._calls.add(f"getticket/{ticket_type}", found.owner)
        return self._ticket_answer(
            found.owner,
            ticket_type,
            access_token,
            now,
            renew_within_s=self.config.overlap_s,
            min_expires_in_s=0,
        )

    def clear_quota(self, body: object, now: float) -> dict[str, object]:
        body = _parse_body(body)
        if not isinstance(body, dict) or not all(
            isinstance(body.get(k), str | None) for k in ("appid", "appsecret")
        ):
            return err(47001, "data format error")
        checked = self._app_and_secret(body.get("appid"), body.get("appsecret"))
        if isinstance(checked, dict):
            return checked
        self._calls.add("clear_quota", checked)
        if not self._cleared.has_room(checked, now):
            return err(48006, "forbid to clear quota because of reaching the limit")
        self._cleared.record(checked, now)
        self._forced.clear(checked)
        logger.info("sandbox cleared the quota of %s", checked)
        return err(0, "ok")

    def invalidate(self, appid: str, now: float) -> bool:
        """Kill the app's current tokens at once (as an admin resetting the secret would)."""
        killed = False
        for api in ("classic", "stable"):
            record = self._tokens.get(self._current.get((appid, api)))
            if record is not None and record.alive(now):
                record.valid_until, killed = now, True
        return killed
