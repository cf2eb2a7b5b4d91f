"""`Gateway`: what the routes do, thin over `TokenView` (reads), `TokenClient.report_invalid`
and `Overrider`, with API-key authentication, scopes and a per-key rate limit.

Routes are made per token kind from `KIND_PATHS` (`_routes`): the access token's read,
report and override. Tickets are read at `TICKET_PATHS` (`tickets/jsapi`, ...), and
`jssdk_config` signs an official account's `wx.config` with the held jsapi ticket.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from consumer_lib import (
    BrokerError,
    ConfigError,
    StoreError,
    TokenClient,
    TokenKind,
    TokenUnavailable,
    TokenUpdate,
)
from consumer_lib.jssdk import MAX_URL_CHARS, jssdk_config, page_url
from consumer_lib.wire.kinds import TICKET_NAMES
from consumer_lib.wire.refresh_request import ReasonText
from producer.leadership.clock_skew import ClockSkewed

from ._apikeys import ApiKey, KeyRing, Scope
from ._fastpath import authorization
from ._http import ApiError
from ._override import Overrider, OverrideRefused, PublishFailed
from ._ratelimit import RateLimiter
from ._stream import StreamLimits
from ._tokens import AmbiguousApp, Held, TokenView, UnknownApp

log = logging.getLogger(__name__)

#: URL path segment of each kind served; tickets add theirs here.
KIND_PATHS: dict[str, TokenKind] = {"access_token": TokenKind.ACCESS_TOKEN}
#: URL path segment of each ticket served (read only): `tickets/<name>` for every ticket name.
TICKET_PATHS: dict[str, TokenKind] = {f"tickets/{n}": k for n, k in TICKET_NAMES.items()}
APP_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
#: The page URLs jssdk-config signs (as its OpenAPI document says): absolute http(s), a host
#: name, a port 1-65535 if any, printable ASCII, at most `MAX_URL_CHARS`; `jssdk.page_url`
#: checks the rest.
PAGE_URL = re.compile(
    r"^https?://[A-Za-z0-9.-]+"
    r"(:(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3}))?"
    r"([/?#][\x21-\x7e]*)?$"
)
#: What makes an API key's app entry a pattern (`fnmatch`) rather than one app id.
_PATTERN_CHARS = frozenset("*?[")
#: Clients told 503 are asked to come back this soon.
RETRY_AFTER_S = 2
KEYS_RELOAD_EVERY_S = 2.0

TokenText = Annotated[
    str, StringConstraints(min_length=1, max_length=512, pattern=r"^[\x21-\x7e]+$")
]


class ReportBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    access_token: TokenText
    reason: ReasonText | None = None


class OverrideBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    access_token: TokenText
    expires_in: Annotated[int, Field(ge=1, le=86_400)]
    reason: ReasonText | None = None


@dataclass
class Gateway:
    """Everything a request needs; built once by `__main__` (or a test)."""

    client: TokenClient
    view: TokenView
    keys: KeyRing
    overrider: Overrider | None = None
    operator: str = "gateway"
    default_rate_per_s: float = 50.0
    max_body_bytes: int = 4096
    legacy_anonymous: bool = False
    limiter: RateLimiter = field(default_factory=RateLimiter)
    clock: Callable[[], float] = time.time
    metrics: Callable[[], tuple[bytes, str]] | None = None
    #: `GET /v1/stream`'s heartbeat, streams per key and write timeout.
    stream_limits: StreamLimits = field(default_factory=StreamLimits)
    #: A relay's upstream gateway (`_relay`); None: fed by Redis and the broker.
    upstream: str | None = None
    _bodies: dict[tuple[str, TokenKind], tuple[TokenUpdate, int, float, bytes]] = field(
        default_factory=dict, repr=False
    )
    #: Answers by HTTP status, for metrics (the event loop's thread only).
    responses: dict[int, int] = field(default_factory=dict, repr=False)

    def count_response(self, status: int) -> None:
        self.responses[status] = self.responses.get(status, 0) + 1

    # ------------------------------------------------------------ auth
    def authenticate(self, request: Request, scope: Scope, app_id: str) -> ApiKey:
        return self.check(authorization(request.scope), scope, app_id)

    def check(self, header: str | None, scope: Scope, app_id: str | None) -> ApiKey:
        """The key presented in `header` if it may do `scope` on `app_id` now, else
        `ApiError` (401, 403, 404, 429). The rate limit is charged last, only when the
        request is allowed. `app_id` None: no app is named (the caller filters what it
        serves with `ApiKey.may_use`: a stream of every app)."""
        if header is None:
            raise ApiError(
                401,
                "no API key: send 'Authorization: Bearer <key>'",
                headers={"WWW-Authenticate": 'Bearer realm="wxtoken"'},
            )
        scheme, _, presented = header.partition(" ")
        presented = presented.strip()
        if scheme.lower() != "bearer" or not presented:
            raise ApiError(
                401,
                "the Authorization header must be 'Bearer <key>'",
                headers={"WWW-Authenticate": 'Bearer realm="wxtoken"'},
            )
        key = self.keys.find(presented)
        if key is None:
            raise ApiError(
                401,
                "unknown API key",
                headers={"WWW-Authenticate": 'Bearer realm="wxtoken", error="invalid_token"'},
            )
        if scope not in key.scopes:
            raise ApiError(403, f"key {key.name!r} lacks the {scope.value!r} scope")
        if app_id is not None and not APP_ID.match(app_id):
            raise ApiError(404, "no such app: app ids are 1-64 of A-Z a-z 0-9 _ . -")
        if app_id is not None and not key.may_use(app_id):
            raise ApiError(403, f"key {key.name!r} may not use app {app_id!r}")
        wait_s = self.limiter.allow(key.name, key.rate_per_s or self.default_rate_per_s)
        if wait_s:
            raise ApiError(
                429,
                f"key {key.name!r} is over its rate limit",
                headers={"Retry-After": str(max(1, math.ceil(wait_s)))},
            )
        return key

    # ------------------------------------------------------------ reads
    async def current(self, app_id: str, kind: TokenKind) -> Held:
        """The valid update of `app_id` and its expiry on this clock (the client's), else
        `ApiError` 404 (unknown) or 503 (none valid)."""
        held = self.view.current(app_id, kind)
        if held is not None:
            return held
        try:
            return await run_in_threadpool(self.view.resolve, app_id, kind)
        except AmbiguousApp as exc:
            raise ApiError(409, str(exc)) from None
        except UnknownApp as exc:
            raise ApiError(404, str(exc)) from None
        except TokenUnavailable as exc:
            raise ApiError(503, str(exc), headers={"Retry-After": str(RETRY_AFTER_S)}) from None

    def token_json(self, held: Held) -> Response:
        return Response(self.token_body(*held), media_type="application/json", headers=_NO_STORE)

    def token_body(self, update: TokenUpdate, expires_s: float) -> bytes:
        """The token's (or ticket's) JSON, its expiry the client's (`expires_s`, this
        clock); built once per update, expiry and second of `expires_in`."""
        expires_in_s = max(0, int(expires_s - self.clock()))
        cached = self._bodies.get((update.app_id, update.kind))
        if (
            cached is None
            or cached[0] is not update
            or cached[1] != expires_in_s
            or cached[2] != expires_s
        ):
            field_name = "ticket" if update.kind.is_ticket else "access_token"
            body = json.dumps(
                {
                    field_name: update.value,
                    "expires_in": expires_in_s,
                    "expires_at": expires_s,
                    "version": update.version,
                },
                separators=(",", ":"),
            ).encode()
            cached = (update, expires_in_s, expires_s, body)
            self._bodies[(update.app_id, update.kind)] = cached
        return cached[3]

    async def jssdk_config(self, app_id: str, url: str | None) -> dict[str, object]:
        """The signed `wx.config` of `app_id` for page `url`, with the held jsapi ticket:
        422 for a missing or bad URL (before any ticket is looked at), else as `current`."""
        if url is None:
            raise ApiError(422, "the page's URL is missing: add ?url=<the page's URL>")
        if len(url) > MAX_URL_CHARS or not PAGE_URL.fullmatch(url):
            raise ApiError(
                422,
                f"bad url: an absolute http:// or https:// URL with a host name (and a port "
                f"1-65535, if any), printable ASCII without spaces, at most {MAX_URL_CHARS} "
                "characters",
            )
        try:
            page_url(url)
        except ValueError as exc:
            raise ApiError(422, f"bad url: {exc}") from None
        ticket, _ = await self.current(app_id, TokenKind.JSAPI_TICKET)
        return jssdk_config(_HeldTicket(ticket.value), app_id, url, clock=self.clock)

    # ------------------------------------------------------------ writes
    def require_held(self, app_id: str, kind: TokenKind) -> None:
        """404 unless this gateway holds (or has held) a `kind` of `app_id`: reports are
        taken only about what it serves, before the body is even read."""
        if not self.view.holds(app_id, kind):
            raise ApiError(
                404,
                f"this gateway holds no {kind} of app {app_id!r}: it takes reports only "
                "about the tokens it serves",
            )

    def report(
        self, key: ApiKey, app_id: str, kind: TokenKind, body: ReportBody
    ) -> dict[str, object]:
        """`report_invalid` of the token in `body`, with the key's name as requester (the
        producer's audit trail sums reports up and names their requesters; the gateway
        cannot write the trail). The answer says whether it was reported and, when not,
        why (`ReportOutcome`)."""
        outcome = self.client.report_invalid_outcome(
            app_id,
            body.access_token,
            kind=kind,
            reason=body.reason or f"gateway key {key.name}",
            requester=f"{self.operator}/key:{key.name}",
        )
        answer: dict[str, object] = {
            "app_id": app_id,
            "reported": outcome.reported,
            "outcome": outcome.value,
        }
        if not outcome.reported:
            answer["reason"] = outcome.explanation
        return answer

    def default_app(self, header: str | None) -> str:
        """The app `GET /accesstoken` without `?appid=` means: the one access token held
        that the presented key may use, or the key's one app when it names exactly one
        (no pattern); 404 otherwise. Authentication is checked afterwards, as usual."""
        key = None
        if header is not None:
            scheme, _, presented = header.partition(" ")
            if scheme.lower() == "bearer" and presented.strip():
                key = self.keys.find(presented.strip())
        if key is not None and len(key.apps) == 1 and not _PATTERN_CHARS & set(key.apps[0]):
            return key.apps[0]
        held = {u.app_id for u in self.view.held() if u.kind is TokenKind.ACCESS_TOKEN}
        if key is not None:
            held = {app_id for app_id in held if key.may_use(app_id)}
        if len(held) != 1:
            raise ApiError(404, "no default app: several are served; add ?appid=<app id>")
        return held.pop()

    def override(
        self, key: ApiKey, app_id: str, kind: TokenKind, body: OverrideBody
    ) -> tuple[int, dict[str, object]]:
        if self.overrider is None:
            raise ApiError(
                501, "overrides need the gateway's operator key (WXTOKEN_SIGNING_KEY_FILE)"
            )
        if (app_id, kind) not in {(u.app_id, u.kind) for u in self.view.held()}:
            try:
                self.view.resolve(app_id, kind)
            except UnknownApp as exc:
                raise ApiError(404, str(exc)) from None
            except TokenUnavailable:
                pass  # known but expired: an override is what it needs
        try:
            update = self.overrider.override(
                app_id,
                kind,
                body.access_token,
                expires_in_s=body.expires_in,
                reason=body.reason,
                key_name=key.name,
            )
        except (OverrideRefused, ClockSkewed) as exc:
            raise ApiError(409, f"not written: {exc}") from None
        except PublishFailed as exc:
            return 202, {"app_id": app_id, "published": False, "reason": str(exc)}
        except (StoreError, BrokerError) as exc:
            raise ApiError(
                503, f"nothing changed: {exc}", headers={"Retry-After": str(RETRY_AFTER_S)}
            ) from None
        return 201, {
            "app_id": app_id,
            "version": update.version,
            "expires_at": update.expires_at,
            "published": True,
        }

    async def watch_keys(self) -> None:
        """Re-read the keys file when it changes; a broken file keeps the keys in force."""
        while True:
            await asyncio.sleep(KEYS_RELOAD_EVERY_S)
            try:
                if await run_in_threadpool(self.keys.reload_if_changed):
                    log.info("keys file re-read: %d key(s)", len(self.keys))
            except ConfigError as exc:
                log.warning("keeping the keys in force: %s", exc)


_NO_STORE = {"Cache-Control": "no-store"}


@dataclass(frozen=True)
class _HeldTicket:
    """A `jssdk.TicketSource` of the one ticket the gateway already holds (no wait)."""

    value: str

    def get_ticket(self, app_id: str, ticket: str, timeout: float = 5.0) -> str:
        return self.value
