"""What a sandbox serves: official accounts (appid -> secret), WeCom agents, lifetimes, limits.

Both spec parsers raise ValueError naming the bad entry by position, never echoing a secret.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

_CORP_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_AGENT_ID = re.compile(r"^[0-9]{1,12}$")


@dataclass(frozen=True)
class WecomAgent:
    """One WeCom app: a corp, one of its agents, and that agent's own secret."""

    corp_id: str
    agent_id: str
    secret: str = field(repr=False)

    def __post_init__(self) -> None:
        if not _CORP_ID.fullmatch(self.corp_id):
            raise ValueError("a corp_id is 1-64 letters, digits, '_', '.' or '-'")
        if not _AGENT_ID.fullmatch(self.agent_id):
            raise ValueError("an agent_id is 1-12 digits")
        if not self.secret or any(c.isspace() for c in self.secret):
            raise ValueError("an agent secret must be non-empty without whitespace")

    @property
    def key(self) -> str:
        """How stats and faults name the agent: ``corp_id/agent_id``."""
        return f"{self.corp_id}/{self.agent_id}"


@dataclass(frozen=True)
class SandboxPlatform:
    """A third-party platform (open platform component) and where its pushes go."""

    component_appid: str
    secret: str = field(repr=False)
    #: The message-check token and EncodingAESKey the platform configured with WeChat.
    token: str = field(repr=False)
    encoding_aes_key: str = field(repr=False)
    #: The authorization-event URL; None: nothing is pushed.
    callback_url: str | None = None

    def __post_init__(self) -> None:
        if not re.fullmatch(r"^wx[A-Za-z0-9]{16}$", self.component_appid):
            raise ValueError("a component_appid is 'wx' and 16 letters or digits")
        if not self.secret or any(c.isspace() for c in self.secret):
            raise ValueError("a component secret must be non-empty without whitespace")
        if not re.fullmatch(r"^[A-Za-z0-9+/]{43}$", self.encoding_aes_key):
            raise ValueError("an EncodingAESKey is 43 characters of A-Z a-z 0-9 + /")
        if not re.fullmatch(r"^[A-Za-z0-9]{3,32}$", self.token):
            raise ValueError("a platform token is 3-32 letters and digits")


@dataclass(frozen=True)
class SandboxConfig:
    """Apps and WeCom agents the sandbox knows, token lifetime, overlap window and limits."""

    apps: Mapping[str, str]
    expires_in_s: int = 7200
    overlap_s: float = 300.0
    host: str = "127.0.0.1"
    port: int = 0  # 0 = pick a free port
    wecom_agents: Iterable[WecomAgent] = ()
    #: WeCom ticket limits per rolling hour: all tickets of a corp, and each agent's.
    corp_tickets_per_hour: int = 400
    agent_tickets_per_hour: int = 100
    #: clear_quota/v2 calls per app per rolling 30 days.
    clear_quota_per_month: int = 10
    #: Third-party platforms, their verify-ticket pushes and their authorizers.
    platforms: Iterable[SandboxPlatform] = ()
    #: Seconds between verify-ticket pushes (WeChat: 600); the first goes out at start.
    push_interval_s: float = 600.0
    #: How long a pushed verify ticket stays valid (WeChat: 12 hours).
    ticket_lifetime_s: float = 12 * 3600.0
    #: How long an authorization code can be redeemed (WeChat: 1 hour).
    auth_code_lifetime_s: float = 3600.0

    def __post_init__(self) -> None:
        if self.expires_in_s < 1 or self.overlap_s < 0:
            raise ValueError("expires_in_s must be >= 1 and overlap_s >= 0")
        limits = (self.corp_tickets_per_hour, self.agent_tickets_per_hour)
        if min(*limits, self.clear_quota_per_month) < 0:
            raise ValueError("limits must be >= 0")
        object.__setattr__(self, "apps", dict(self.apps))
        agents = tuple(self.wecom_agents)
        keys = [a.key for a in agents]
        if len(set(keys)) != len(keys):
            raise ValueError("a WeCom agent is listed twice")
        secrets_by_corp: dict[tuple[str, str], str] = {}
        for agent in agents:
            if secrets_by_corp.setdefault((agent.corp_id, agent.secret), agent.key) != agent.key:
                raise ValueError(f"WeCom agents of corp {agent.corp_id} share a secret")
        object.__setattr__(self, "wecom_agents", agents)
        platforms = tuple(self.platforms)
        appids = [p.component_appid for p in platforms]
        if len(set(appids)) != len(appids):
            raise ValueError("a platform is listed twice")
        if min(self.push_interval_s, self.ticket_lifetime_s, self.auth_code_lifetime_s) <= 0:
            raise ValueError("push_interval_s, ticket_lifetime_s, auth_code_lifetime_s must be > 0")
        object.__setattr__(self, "platforms", platforms)

    @property
    def agents(self) -> tuple[WecomAgent, ...]:
        return tuple(self.wecom_agents)

    @property
    def open_platforms(self) -> tuple[SandboxPlatform, ...]:
        return tuple(self.platforms)


def parse_apps(spec: str) -> dict[str, str]:
    """Parse ``"appid:secret,appid2:secret2"``; ValueError names the bad entry (not secrets)."""
    if not spec.strip():
        raise ValueError("no apps given; expected 'appid:secret[,appid2:secret2...]'")
    apps: dict[str, str] = {}
    for position, entry in enumerate(spec.split(","), start=1):
        if not entry.strip():
            raise ValueError(f"app entry #{position} is empty")
        appid, colon, secret = (part.strip() for part in entry.partition(":"))
        if not colon:
            raise ValueError(f"app entry #{position} has no ':'; expected appid:secret")
        if not appid or not secret:
            raise ValueError(f"app entry #{position} has an empty appid or secret")
        if appid in apps:
            raise ValueError(f"duplicate appid {appid!r} in app list")
        apps[appid] = secret
    return apps


def parse_wecom(spec: str) -> list[WecomAgent]:
    """Parse ``"corp:agent:secret,..."`` (empty = none); ValueError names the bad entry."""
    if not spec.strip():
        return []
    agents: list[WecomAgent] = []
    for position, entry in enumerate(spec.split(","), start=1):
        parts = [part.strip() for part in entry.split(":", 2)]
        if len(parts) != 3 or not all(parts):
            raise ValueError(
                f"WeCom entry #{position} must be corp_id:agent_id:secret, none of them empty"
            )
        try:
            agents.append(WecomAgent(*parts))
        except ValueError as exc:
            raise ValueError(f"WeCom entry #{position}: {exc}") from None
    try:
        SandboxConfig(apps={}, wecom_agents=agents)
    except ValueError as exc:
        raise ValueError(f"WeCom agents: {exc}") from None
    return agents


def parse_platforms(spec: str) -> list[SandboxPlatform]:
    """Parse ``"appid:secret:token:encoding_aes_key[@callback_url],..."`` (empty = none);
    ValueError names the bad entry by position, never a value."""
    if not spec.strip():
        return []
    platforms: list[SandboxPlatform] = []
    for position, entry in enumerate(spec.split(","), start=1):
        values, at, url = entry.strip().partition("@")
        parts = [part.strip() for part in values.split(":")]
        if len(parts) != 4 or not all(parts) or (at and not url.strip()):
            raise ValueError(
                f"platform entry #{position} must be appid:secret:token:encoding_aes_key"
                "[@callback_url], none of them empty"
            )
        try:
            appid, secret, token, key = parts
            platforms.append(SandboxPlatform(appid, secret, token, key, url.strip() or None))
        except ValueError as exc:
            raise ValueError(f"platform entry #{position}: {exc}") from None
    try:
        SandboxConfig(apps={}, platforms=platforms)
    except ValueError as exc:
        raise ValueError(f"platforms: {exc}") from None
    return platforms
