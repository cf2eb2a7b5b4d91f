"""The OpenAPI 3.0 document the gateway serves at `/v1/openapi.json` (and fuzz tests read)."""

from __future__ import annotations

from typing import Any

from consumer_lib import ReportOutcome
from consumer_lib.wire.refresh_request import REASON_MAX_CHARS, REASON_PATTERN

_JSON = "application/json"


def _ref(schema: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{schema}"}


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    """An answer with a JSON body of `schema`."""
    return {"description": description, "content": {_JSON: {"schema": schema}}}


def _json_body(schema: str) -> dict[str, Any]:
    """A required JSON request body of the named schema."""
    return {"required": True, "content": {_JSON: {"schema": _ref(schema)}}}


_ERROR = _ref("Error")
_APP_ID = {
    "name": "app_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,64}$"},
}
_TOKEN = {"type": "string", "minLength": 1, "maxLength": 512, "pattern": "^[\\x21-\\x7e]+$"}
_REASON = {
    "type": "string",
    "maxLength": REASON_MAX_CHARS,
    "pattern": REASON_PATTERN,  # the refresh request's own: no control characters
    "nullable": True,
}


def _error(description: str, *, retry_after: bool = False) -> dict[str, Any]:
    answer = _json(description, _ERROR)
    if retry_after:
        answer["headers"] = {"Retry-After": {"schema": {"type": "integer", "minimum": 1}}}
    return answer


_AUTH_ERRORS = {
    "401": _error("no key, a malformed Authorization header, or an unknown key"),
    "403": _error("the key lacks the scope, or may not use this app"),
    "404": _error("unknown app"),
    "409": _error(
        "asked by a third-party platform customer's own appid that several platforms serve: "
        "ask by {component_appid}.{authorizer_appid}"
    ),
    "429": _error("the key is over its rate limit", retry_after=True),
}
_BODY_ERRORS = {
    "413": _error("the body is larger than the gateway accepts"),
    "422": _error("the body is not the JSON object described"),
}


def _kind_paths(segment: str) -> dict[str, Any]:
    base = f"/v1/apps/{{app_id}}/{segment}"
    return {
        base: {
            "get": {
                "summary": f"The current {segment}, from the gateway's memory",
                "operationId": f"get_{segment}",
                "parameters": [_APP_ID],
                "responses": {
                    "200": _json("the current token", _ref("Token")),
                    **_AUTH_ERRORS,
                    "503": _error("no valid token held; the reason says why", retry_after=True),
                },
            },
            "post": {
                "summary": "Override: store and publish a token obtained elsewhere",
                "operationId": f"override_{segment}",
                "parameters": [_APP_ID],
                "requestBody": _json_body("Override"),
                "responses": {
                    "201": _json("stored and published", _ref("Stored")),
                    "202": _json("stored, but publishing failed", _ref("Stored")),
                    **_AUTH_ERRORS,
                    "409": _error("Redis holds a newer version; nothing changed"),
                    **_BODY_ERRORS,
                    "501": _error("this gateway has no operator signing key"),
                    "503": _error(
                        "Redis or the broker unreachable; nothing changed", retry_after=True
                    ),
                },
            },
        },
        f"{base}:report": {
            "post": {
                "summary": "Report a token WeChat rejected (40001, 40014, 42001)",
                "operationId": f"report_{segment}",
                "parameters": [_APP_ID],
                "requestBody": _json_body("Report"),
                "responses": {
                    "202": _json(
                        "the producers were asked (or it was coalesced)", _ref("Reported")
                    ),
                    **_AUTH_ERRORS,
                    **_BODY_ERRORS,
                },
            }
        },
    }


def _credential(field: str) -> dict[str, Any]:
    """A token or ticket as the gateway answers it: the value under `field`, and its life."""
    return {
        "type": "object",
        "required": [field, "expires_in", "expires_at", "version"],
        "properties": {
            field: {"type": "string"},
            "expires_in": {"type": "integer", "minimum": 0},
            "expires_at": {"type": "number"},
            "version": {"type": "integer", "minimum": 1},
        },
    }


def _plain(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"text/plain": {"schema": {"type": "string"}}}}


#: The same expression as `_app.PAGE_URL` (a unit test compares them).
_PAGE_URL = (
    "^https?://[A-Za-z0-9.-]+"
    "(:(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3}))?"
    "([/?#][\\x21-\\x7e]*)?$"
)


def _ticket_paths(ticket_names: list[str]) -> dict[str, Any]:
    ticket_type = {
        "name": "type",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "enum": ticket_names},
    }
    url = {
        "name": "url",
        "in": "query",
        "required": True,
        "schema": {"type": "string", "maxLength": 4096, "pattern": _PAGE_URL},
        "description": "the page's absolute http(s) URL; signed up to its '#'",
    }
    not_found = _error("unknown app, or no such ticket type")
    return {
        "/v1/apps/{app_id}/tickets/{type}": {
            "get": {
                "summary": "The current ticket of this type, from the gateway's memory",
                "operationId": "get_ticket",
                "parameters": [_APP_ID, ticket_type],
                "responses": {
                    "200": _json("the current ticket", _ref("Ticket")),
                    **_AUTH_ERRORS,
                    "404": not_found,
                    "503": _error("no valid ticket held; the reason says why", retry_after=True),
                },
            }
        },
        "/v1/apps/{app_id}/jssdk-config": {
            "get": {
                "summary": "wx.config for a page, signed with the app's current jsapi ticket",
                "operationId": "get_jssdk_config",
                "parameters": [_APP_ID, url],
                "responses": {
                    "200": _json(
                        "appId, timestamp, nonceStr and signature for wx.config",
                        _ref("JsSdkConfig"),
                    ),
                    **_AUTH_ERRORS,
                    "422": _error(
                        "the url is missing, relative, not http(s), has spaces or a port "
                        "outside 1-65535"
                    ),
                    "503": _error("no valid jsapi ticket held", retry_after=True),
                },
            }
        },
    }


def openapi_document(kind_segments: list[str], ticket_names: list[str]) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for segment in kind_segments:
        paths.update(_kind_paths(segment))
    paths.update(_ticket_paths(ticket_names))
    paths["/accesstoken"] = {
        "get": {
            "summary": "The origin server's read route: the bare token as text",
            "operationId": "legacy_accesstoken",
            "parameters": [
                {
                    "name": "appid",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "string"},
                    "description": "the app; without it, the one app the key may use "
                    "(its only app, or the only one held that it may use), else 404",
                }
            ],
            "responses": {
                "200": _plain("the token"),
                **_AUTH_ERRORS,
                "503": _error("no valid token held", retry_after=True),
            },
        }
    }
    health = {"type": "object"}
    for path, what in (("/healthz", "the process is alive"), ("/readyz", "holding tokens")):
        paths[path] = {
            "get": {
                "summary": what,
                "operationId": path.strip("/"),
                "security": [],
                "responses": {
                    "200": _json(what, health),
                    **({"503": _json("not ready", health)} if path == "/readyz" else {}),
                },
            }
        }
    return {
        "openapi": "3.0.3",
        "info": {"title": "wxtoken gateway", "version": "1"},
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error", "reason"],
                    "properties": {"error": {"type": "string"}, "reason": {"type": "string"}},
                },
                "Token": _credential("access_token"),
                "Ticket": _credential("ticket"),
                "JsSdkConfig": {
                    "type": "object",
                    "required": ["appId", "timestamp", "nonceStr", "signature"],
                    "properties": {
                        "appId": {"type": "string"},
                        "timestamp": {"type": "integer", "minimum": 1},
                        "nonceStr": {"type": "string", "pattern": "^[A-Za-z0-9]{1,32}$"},
                        "signature": {"type": "string", "pattern": "^[0-9a-f]{40}$"},
                    },
                },
                "Report": {
                    "type": "object",
                    "required": ["access_token"],
                    "additionalProperties": False,
                    "properties": {"access_token": _TOKEN, "reason": _REASON},
                },
                "Reported": {
                    "type": "object",
                    "required": ["app_id", "reported", "outcome"],
                    "properties": {
                        "app_id": {"type": "string"},
                        "reported": {"type": "boolean"},
                        "outcome": {
                            "type": "string",
                            "enum": [outcome.value for outcome in ReportOutcome],
                            "description": "sent, queued (sent once the gateway connects to "
                            "the broker), not_current (a newer token is held), coalesced "
                            "(reported less than 30 s ago), broker_unreachable",
                        },
                        "reason": {
                            "type": "string",
                            "description": "why nothing was reported (only when reported is false)",
                        },
                    },
                },
                "Override": {
                    "type": "object",
                    "required": ["access_token", "expires_in"],
                    "additionalProperties": False,
                    "properties": {
                        "access_token": _TOKEN,
                        "expires_in": {"type": "integer", "minimum": 1, "maximum": 86400},
                        "reason": _REASON,
                    },
                },
                "Stored": {
                    "type": "object",
                    "required": ["app_id", "published"],
                    "properties": {
                        "app_id": {"type": "string"},
                        "version": {"type": "integer"},
                        "expires_at": {"type": "number"},
                        "published": {"type": "boolean"},
                        "reason": {"type": "string"},
                    },
                },
            },
        },
    }
