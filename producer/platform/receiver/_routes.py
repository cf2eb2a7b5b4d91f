"""The receiver's HTTP face: the authorization-event URL, health, readiness, metrics."""

from __future__ import annotations

from collections.abc import Callable

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from producer.platform.receiver._receiver import Receiver

#: WeChat's authorization-event URL, one per platform: configure
#: `https://<your host>/wechat/platform/<component appid>/events` on the open platform.
EVENTS_PATH = "/wechat/platform/{component_appid}/events"
DEFAULT_MAX_BODY_BYTES = 64 * 1024


def build_app(
    receiver: Receiver,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    metrics: Callable[[], tuple[bytes, str]] | None = None,
) -> Starlette:
    """The ASGI app over `receiver`; `metrics` renders the exposition (None: 404)."""

    async def events(request: Request) -> Response:
        appid = request.path_params["component_appid"]
        body = await _bounded_body(request, max_body_bytes)
        if body is None:
            answer = receiver.refuse("too_large", appid)
        else:
            query = dict(request.query_params.items())
            answer = await run_in_threadpool(receiver.receive, appid, query, body)
        return PlainTextResponse(answer.text, status_code=answer.status)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "alive"})

    async def readyz(request: Request) -> Response:
        # Not tied to the registry: a receiver taken out of the load balancer while the
        # database is away would never see the push that shows it is back. Pushes that
        # cannot be stored get 503 each, so WeChat retries them.
        return JSONResponse(
            {
                "status": "ready",
                "platforms": sorted(receiver.platforms),
                "registry_ok": receiver.stored.registry_ok,
            }
        )

    async def metrics_route(request: Request) -> Response:
        if metrics is None:
            return PlainTextResponse("metrics are off", status_code=404)
        body, content_type = metrics()
        return Response(body, media_type=content_type)

    return Starlette(
        routes=[
            Route(EVENTS_PATH, events, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics_route, methods=["GET"]),
        ]
    )


async def _bounded_body(request: Request, max_bytes: int) -> bytes | None:
    """The body, or None once it is over `max_bytes` (the rest is never read)."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > max_bytes):
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            return None
    return bytes(body)
