"""`wxtoken-gateway`: the current tokens over HTTP, for services in any language.

A Starlette app on uvicorn holding a `TokenClient`: reads are answered from memory, reports
become `report_invalid`, overrides are signed with the gateway's operator key. API keys
(hashed in a keys file) carry app patterns and scopes; see the README.
"""

from ._apikeys import KeyRing, Scope, add_key
from ._app import Gateway, build_app
from ._settings import GatewaySettings

__all__ = ["Gateway", "GatewaySettings", "KeyRing", "Scope", "add_key", "build_app"]
