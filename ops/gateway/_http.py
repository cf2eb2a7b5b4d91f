"""The gateway's HTTP vocabulary: one JSON error shape, bounded JSON bodies.

Every error answer is `{"error": "<code>", "reason": "<one line>"}` with the status; a
reason never repeats a presented key or token.
"""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

ModelT = TypeVar("ModelT", bound=BaseModel)

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "body_too_large",
    422: "invalid_body",
    429: "rate_limited",
    500: "internal_error",
    501: "not_configured",
    503: "unavailable",
}


class ApiError(Exception):
    """Raised by a route; rendered as the JSON error shape."""

    def __init__(self, status: int, reason: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers or {}


def error_response(status: int, reason: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse(
        {"error": _CODES.get(status, "error"), "reason": reason},
        status_code=status,
        headers={"Cache-Control": "no-store", **(headers or {})},
    )


async def on_api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.reason, exc.headers)


async def on_http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's own 404/405 in our shape."""
    assert isinstance(exc, HTTPException)
    reason = {404: "no such route", 405: "method not allowed on this route"}.get(
        exc.status_code, str(exc.detail)
    )
    return error_response(exc.status_code, reason, dict(exc.headers or {}))


async def read_model(request: Request, model: type[ModelT], *, max_bytes: int) -> ModelT:
    """The body as `model`: 413 beyond `max_bytes` (before reading it all), 422 if invalid."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > max_bytes):
        raise ApiError(413, f"request bodies are limited to {max_bytes} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise ApiError(413, f"request bodies are limited to {max_bytes} bytes")
    try:
        return model.model_validate_json(bytes(body), strict=True)
    except ValidationError as exc:
        raise ApiError(422, describe(exc)) from None


def describe(exc: ValidationError) -> str:
    """Each bad field and what is wrong, never the input (it may be a token)."""
    parts = []
    for error in exc.errors(include_input=False, include_url=False)[:5]:
        where = ".".join(str(p)[:32] for p in error["loc"]) or "body"
        parts.append(f"{where}: {error['msg']}")
    return "invalid body: " + "; ".join(parts)
