"""`wxtoken-gateway`: the current tokens over HTTP, for services in any language.

A Starlette app on uvicorn (the `wxtoken[gateway]` extra) holding a `TokenClient`: reads are
answered from memory, reports become `report_invalid`, overrides are signed with the
gateway's operator key. API keys (hashed in a keys file) carry app patterns and scopes.

    _apikeys    the keys file, hashing, `add_key` (no web dependency: the CLI uses it)
    _settings   GatewaySettings (WXTOKEN_GATEWAY_*)
    _ratelimit  one token bucket per key
    _tokens     TokenView: what is served, held in memory; misses, unknown apps
    _override   the override route's `issue_override()` (as `wxtoken set`)
    _http       the JSON error shape, bounded bodies
    _fastpath   the hot read in raw ASGI
    _app        Gateway: auth, scopes, reads, reports, overrides
    _routes     the routes and build_app
    _openapi    the served OpenAPI document
    _wiring     make_gateway(settings)
    __main__    the console script
"""

from ._apikeys import KeyRing, Scope, add_key
from ._settings import GatewaySettings

__all__ = ["GatewaySettings", "KeyRing", "Scope", "add_key"]
