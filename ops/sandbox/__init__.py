"""A local stand-in for WeChat's and WeCom's credential APIs, with switchable faults.

Demos and integration tests use it instead of api.weixin.qq.com and qyapi.weixin.qq.com
(one server answers both). Errors come back the way WeChat sends them: HTTP 200 with
``{"errcode": N, "errmsg": "..."}``. The semantics live in `wechat` (official accounts:
tokens, tickets, clear_quota), `wecom` (agents' tokens and tickets) and `openplatform`
(third-party platforms: component token, authorizers; `pusher` sends their encrypted
verify tickets and authorization events); `faults` says what can go wrong, `http` routes
requests, `server` runs it.
"""

from .config import (
    SandboxConfig,
    SandboxPlatform,
    WecomAgent,
    parse_apps,
    parse_platforms,
    parse_wecom,
)
from .faults import ENDPOINTS, FAULT_MODES, TOKEN_ENDPOINTS, Fault, fault_reply
from .server import SandboxServer
from .state import SandboxState
from .wechat import FORCE_REFRESH_MIN_INTERVAL_S, FORCE_REFRESH_PER_DAY, TICKET_TYPES
from .wecom import WECOM_TICKET_TYPES

__all__ = [
    "ENDPOINTS",
    "FAULT_MODES",
    "FORCE_REFRESH_MIN_INTERVAL_S",
    "FORCE_REFRESH_PER_DAY",
    "TICKET_TYPES",
    "TOKEN_ENDPOINTS",
    "WECOM_TICKET_TYPES",
    "Fault",
    "SandboxConfig",
    "SandboxPlatform",
    "SandboxServer",
    "SandboxState",
    "WecomAgent",
    "fault_reply",
    "parse_apps",
    "parse_platforms",
    "parse_wecom",
]
