"""The gateway's routes and ASGI app: hot reads first (`_fastpath`), then Starlette."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from consumer_lib import TokenKind

from ._apikeys import Scope
from ._app import APP_ID, KIND_PATHS, TICKET_PATHS, Gateway, OverrideBody, ReportBody
from ._fastpath import FastReads, authorization
from ._http import ApiError, on_api_error, on_http_exception, read_model
from ._openapi import openapi_document
from ._stream import StreamHub


def _kind_routes(gw: Gateway, segment: str, kind: TokenKind) -> list[Route]:
    async def read(request: Request) -> Response:
        app_id = request.path_params["app_id"]
        gw.authenticate(request, Scope.READ, app_id)
        return gw.token_json(await gw.current(app_id, kind))

    async def report(request: Request) -> Response:
        app_id = request.path_params["app_id"]
        key = gw.authenticate(request, Scope.REPORT, app_id)
        gw.require_held(app_id, kind)
        body = await read_model(request, ReportBody, max_bytes=gw.max_body_bytes)
        answer = await run_in_threadpool(gw.report, key, app_id, kind, body)
        return JSONResponse(answer, status_code=202)

    async def override(request: Request) -> Response:
        app_id = request.path_params["app_id"]
        key = gw.authenticate(request, Scope.OVERRIDE, app_id)
        body = await read_model(request, OverrideBody, max_bytes=gw.max_body_bytes)
        status, answer = await run_in_threadpool(gw.override, key, app_id, kind, body)
        return JSONResponse(answer, status_code=status)

    base = f"/v1/apps/{{app_id}}/{segment}"
    return [
        Route(base, read, methods=["GET"]),
        Route(base, override, methods=["POST"]),
        Route(f"{base}:report", report, methods=["POST"]),
    ]


def _ticket_routes(gw: Gateway) -> list[Route]:
    async def read(request: Request) -> Response:
        app_id = request.path_params["app_id"]
        gw.authenticate(request, Scope.READ, app_id)
        kind = TICKET_PATHS.get(f"tickets/{request.path_params['type']}")
        if kind is None:
            names = ", ".join(path.removeprefix("tickets/") for path in TICKET_PATHS)
            raise ApiError(404, f"no such ticket type: use one of {names}")
        return gw.token_json(await gw.current(app_id, kind))

    async def jssdk(request: Request) -> Response:
        app_id = request.path_params["app_id"]
        gw.authenticate(request, Scope.READ, app_id)
        config = await gw.jssdk_config(app_id, request.query_params.get("url"))
        return JSONResponse(config, headers={"Cache-Control": "no-store"})

    return [
        Route("/v1/apps/{app_id}/tickets/{type}", read, methods=["GET"]),
        Route("/v1/apps/{app_id}/jssdk-config", jssdk, methods=["GET"]),
    ]


# C901 counts the nested route handlers (1-3 paths each) into build_app: one table of routes.
def build_app(gw: Gateway, *, start_client: bool = True) -> ASGIApp:  # noqa: C901
    """The ASGI app (hot reads first, then Starlette); its lifespan starts the client and
    the keys watcher."""
    document = openapi_document(
        list(KIND_PATHS), [p.removeprefix("tickets/") for p in TICKET_PATHS]
    )

    async def legacy(request: Request) -> Response:
        """The origin server's `GET /accesstoken[?appid=]`: the bare token as text."""
        app_id = request.query_params.get("appid")
        if app_id is None:
            app_id = gw.default_app(authorization(request.scope))
        if not gw.legacy_anonymous:
            gw.authenticate(request, Scope.READ, app_id)
        elif not APP_ID.match(app_id):
            raise ApiError(404, "no such app: app ids are 1-64 of A-Z a-z 0-9 _ . -")
        update, _ = await gw.current(app_id, TokenKind.ACCESS_TOKEN)
        return PlainTextResponse(update.value, headers={"Cache-Control": "no-store"})

    async def openapi(request: Request) -> Response:
        return JSONResponse(document)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "alive"})

    async def readyz(request: Request) -> Response:
        """A status only (and why when not ready; a relay, whether its upstream answers):
        what is held (apps, counts) is for the metrics listener."""
        refused = gw.client.broker_login_refused or gw.client.store_login_refused
        if refused is not None:  # a configuration error: not ready until it is fixed
            return JSONResponse({"status": "not ready", "reason": refused}, status_code=503)
        upstream: dict[str, str] = {}
        if gw.upstream is not None:  # a relay: say when it serves only what it holds
            upstream["upstream"] = "connected" if gw.client.connected else "unreachable"
        if gw.view.valid_count() == 0:
            return JSONResponse({"status": "not ready", **upstream}, status_code=503)
        return JSONResponse({"status": "ready", **upstream})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if start_client:
            gw.client.start()
        watcher = asyncio.create_task(gw.watch_keys())
        try:
            yield
        finally:
            watcher.cancel()
            if start_client:
                await run_in_threadpool(gw.client.close)

    routes = [
        Route("/v1/openapi.json", openapi, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/accesstoken", legacy, methods=["GET"]),
    ]
    for segment, kind in KIND_PATHS.items():
        routes += _kind_routes(gw, segment, kind)
    routes += _ticket_routes(gw)
    routes.append(Route("/v1/stream", StreamHub(gw, gw.stream_limits), methods=["GET"]))
    app = Starlette(
        routes=routes,
        exception_handlers={ApiError: on_api_error, HTTPException: on_http_exception},
        lifespan=lifespan,
    )
    return FastReads(app, gw, {**KIND_PATHS, **TICKET_PATHS})
