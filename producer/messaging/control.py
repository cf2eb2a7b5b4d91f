"""Operators' control requests, acted on by the leader: `clear_quota` for one app, and an
operator's `refresh` / `force_refresh` of one credential.

`wxtoken quota clear APP_ID` and `wxtoken refresh APP_ID [--force]` publish a signed
`ControlRequest` on the requests exchange (see `consumer_lib.wire.control`). The request
listener hands every message typed `CONTROL_MESSAGE_TYPE` to
`ControlHandler.handle(delivery)`, which, in order:

1. opens the envelope with the control keys (WXTOKEN_CONTROL_KEYS: a role of their own, not
   the keys trusted for overrides; the signature covers `CONTROL_DOMAIN` too):
   unsigned, unknown-key, forged and malformed requests are counted and logged at most
   once a minute, with the count since (`SummedWarning`; the listener has charged each
   message to its sender's allowance before);
2. ignores the request unless this producer leads (standbys hear every request too);
3. refuses a request issued outside `CONTROL_WINDOW_S` of our clock, and one whose
   `request_id` was taken before (SET NX on `KeyLayout.control_seen`): a replay;
4. clear_quota: checks that the app is ours and an official account, and that its last clear
   is at least `min_interval_s` old (`ControlSpacing`: fleet-wide, given back when the call
   fails transiently), then calls `clear_quota` upstream on a worker thread (the listener
   thread must keep pumping the connection); a refresh: hands it to the credential's
   refresher (`submit_refresh`), which judges it on its next step
   (`producer.refresh.operator`) and answers;
5. records an audit entry (`who` = the request's operator) and stores a `ControlAnswer`
   at `KeyLayout.control_answer(request_id)` for the CLI, first answer wins.

Nothing here raises into the listener.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import redis
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from consumer_lib.amqp import Delivery
from consumer_lib.errors import InvalidUpdate, StoreError
from consumer_lib.redis_errors import REDIS_ERRORS, describe_redis_error
from consumer_lib.wire.control import (
    ANSWER_TTL_S,
    CONTROL_WINDOW_S,
    SEEN_TTL_S,
    ControlAction,
    ControlAnswer,
    ControlRequest,
    ControlResult,
)
from consumer_lib.wire.keys import KeyLayout
from consumer_lib.wire.kinds import Platform
from consumer_lib.wire.signing import key_id, load_public_keys
from producer.app_config import AppConfig
from producer.limits.control_spacing import ControlSpacing
from producer.observability.summed_log import SummedWarning
from producer.refresh.operator import OperatorRefresh, Verdict
from producer.store.audit import AuditEvent, AuditLog
from producer.upstream.errcodes import FailureKind
from producer.upstream.errors import UpstreamError

if TYPE_CHECKING:
    from producer.settings import ProducerSettings

log = logging.getLogger(__name__)


@runtime_checkable
class QuotaClearer(Protocol):
    """What the handler needs upstream: `WeChatClient` and `Upstream` both fit."""

    def clear_quota(self, app: AppConfig) -> None: ...


def _in_thread(work: Callable[[], None]) -> None:
    threading.Thread(target=work, name="wxtoken-control", daemon=True).start()


@dataclass
class ControlStats:
    """Control requests received and what became of them."""

    received: int = 0
    #: Unsigned, signed by an unknown key, forged or malformed.
    rejected: int = 0
    #: Issued outside the window, or a request id seen before.
    expired: int = 0
    replayed: int = 0
    #: Heard while standing by.
    ignored: int = 0
    refused: int = 0
    done: int = 0
    failed: int = 0


class ControlHandler:
    """Verifies and acts on control requests; `handle` is the request listener's hook."""

    def __init__(  # noqa: PLR0913 - keyword-only: what both control actions need
        self,
        redis_client: redis.Redis,
        keys: KeyLayout,
        *,
        apps: Sequence[AppConfig],
        upstream: QuotaClearer | None,
        verify_keys: Sequence[Ed25519PublicKey],
        is_leader: Callable[[], bool],
        producer_id: str,
        audit: AuditLog | None = None,
        clock: Callable[[], float] = time.time,
        run: Callable[[Callable[[], None]], None] = _in_thread,
        min_interval_s: float = 0.0,
        submit_refresh: Callable[[OperatorRefresh], str | None] | None = None,
    ) -> None:
        """`submit_refresh` hands an operator's refresh to its credential's refresher; it
        returns why it could not (None: queued)."""
        self._submit_refresh = submit_refresh
        self._client = redis_client
        self._keys = keys
        self._apps = {app.app_id: app for app in apps}
        self._upstream = upstream
        self._verify_keys = {key_id(key): key for key in verify_keys}
        self._is_leader = is_leader
        self._producer_id = producer_id
        self._audit = audit
        self._clock = clock
        self._run = run
        self._spacing = ControlSpacing(redis_client, keys, min_interval_s=min_interval_s)
        self._lock = threading.Lock()
        self._refusals = SummedWarning(log, clock=clock)
        self.stats = ControlStats()

    def _count(self, field: str) -> None:
        with self._lock:
            setattr(self.stats, field, getattr(self.stats, field) + 1)

    def serve(self, apps: Sequence[AppConfig]) -> None:
        """Act for `apps` from now on (the service's reload)."""
        self._apps = {app.app_id: app for app in apps}

    def handle(self, delivery: Delivery) -> None:
        """One message typed as a control request (undecoded); never raises."""
        try:
            self._handle(delivery.body, delivery.app_id)
        except Exception:
            log.exception("handling a control request failed")

    def _handle(self, body: bytes, app_id: str | None) -> None:
        self._count("received")
        sender = str(app_id or "unknown sender")[:64]
        try:
            request, signer = ControlRequest.open(body, self._verify_keys)
        except InvalidUpdate as exc:
            self._count("rejected")
            self._refusals.note("refused a control request from %r: %s", sender, exc)
            return
        if not self._is_leader():
            self._count("ignored")
            log.debug("standing by: leaving control request %s to the leader", request)
            return
        now_s = self._clock()
        if abs(now_s - request.issued_at) > CONTROL_WINDOW_S:
            self._count("expired")
            log.warning(
                "refused control request %s (key %s): issued %.0f s from our clock, "
                "outside the %.0f s window (clocks apart, or a replay)",
                request,
                signer,
                now_s - request.issued_at,
                CONTROL_WINDOW_S,
            )
            self._answer(
                request,
                ControlResult.REFUSED,
                f"issued {request.issued_at - now_s:+.0f} s from the leader's clock, outside "
                f"the {CONTROL_WINDOW_S:.0f} s time window: check both clocks",
            )
            return
        try:
            first = self._client.set(
                self._keys.control_seen(request.request_id), signer, nx=True, ex=SEEN_TTL_S
            )
        except REDIS_ERRORS as exc:
            self._count("rejected")
            log.error(
                "refused control request %s: cannot check it against replays (%s)",
                request,
                describe_redis_error(exc),
            )
            return
        if not first:
            self._count("replayed")
            log.warning("refused control request %s (key %s): a replay", request, signer)
            return
        if request.action is ControlAction.CLEAR_QUOTA:
            self._start_clear_quota(request, signer)
        else:
            self._refresh(request, signer)

    def _start_clear_quota(self, request: ControlRequest, signer: str) -> None:
        """Refuse a clear_quota this producer cannot make or must space; else run it."""
        app = self._apps.get(request.app_id)
        upstream = self._upstream
        if app is None or app.platform is not Platform.WECHAT or upstream is None:
            if app is None:
                why = "not in this producer's apps file"
            elif upstream is None:
                why = "this producer has no clear_quota client"
            else:
                why = "a WeCom app: WeCom has no clear_quota"
            self._count("refused")
            log.warning("refused control request %s (key %s): %s", request, signer, why)
            self._finish(request, signer, ControlResult.REFUSED, why)
            return
        if not self._claim_spacing(request, signer):
            return
        log.info("control request %s (key %s): calling clear_quota", request, signer)
        self._run(lambda: self._clear_quota(request, signer, app, upstream))

    def _claim_spacing(self, request: ControlRequest, signer: str) -> bool:
        """True when this app's last such request is old enough (`ControlSpacing`); else
        refused, audited and answered."""
        try:
            left_s = self._spacing.claim(request.action, request.app_id, request.request_id)
        except StoreError as exc:
            self._count("rejected")
            log.error("refused control request %s: %s", request, exc)
            return False
        if left_s is None:
            return True
        self._count("refused")
        why = (
            f"the last {request.action} of this app is less than "
            f"{self._spacing.min_interval_s:.0f} s old (WXTOKEN_CLEAR_QUOTA_MIN_INTERVAL_S): "
            f"next in {left_s:.0f} s"
        )
        log.warning("refused control request %s (key %s): %s", request, signer, why)
        self._finish(request, signer, ControlResult.REFUSED, why)
        return False

    def _refresh(self, request: ControlRequest, signer: str) -> None:
        """Hand an operator's refresh to its credential's refresher, which answers."""

        def answer(verdict: Verdict) -> None:
            outcomes = {ControlResult.DONE: "done", ControlResult.FAILED: "failed"}
            self._count(outcomes.get(verdict.result, "refused"))
            log.info("control request %s: %s: %s", request, verdict.result, verdict.message)
            self._finish(request, signer, verdict.result, verdict.message, version=verdict.version)

        item = OperatorRefresh(request, signer, answer)
        why = (
            "this producer takes no operator refreshes"
            if self._submit_refresh is None
            else self._submit_refresh(item)
        )
        if why is not None:
            self._count("refused")
            log.warning("refused control request %s (key %s): %s", request, signer, why)
            self._finish(request, signer, ControlResult.REFUSED, why)
            return
        log.info("control request %s (key %s): handed to its refresher", request, signer)

    def _clear_quota(
        self, request: ControlRequest, signer: str, app: AppConfig, upstream: QuotaClearer
    ) -> None:
        try:
            upstream.clear_quota(app)
        except UpstreamError as exc:
            self._count("failed")
            log.error("%s: clear_quota failed: %s", app.app_id, exc)
            if exc.kind is FailureKind.TRANSIENT:
                self._spacing.release(request.action, request.app_id)
            self._finish(request, signer, ControlResult.FAILED, str(exc), errcode=exc.errcode)
            return
        except Exception:
            self._count("failed")
            log.exception("%s: clear_quota failed unexpectedly", app.app_id)
            self._finish(request, signer, ControlResult.FAILED, "unexpected error in the producer")
            return
        self._count("done")
        log.warning("%s: API quota cleared at the request of %s", app.app_id, request.operator)
        self._finish(request, signer, ControlResult.DONE, "quota cleared")

    def _finish(
        self,
        request: ControlRequest,
        signer: str,
        result: ControlResult,
        message: str,
        *,
        errcode: int | None = None,
        version: int | None = None,
    ) -> None:
        if self._audit is not None:
            event = (
                AuditEvent.CLEAR_QUOTA
                if request.action is ControlAction.CLEAR_QUOTA
                else AuditEvent.REFRESH_REQUEST
            )
            action = "" if request.action is ControlAction.CLEAR_QUOTA else f"{request.action} "
            self._audit.record(
                event,
                request.app_id,
                kind=request.kind.value,
                who=request.operator,
                version=version,
                reason=(
                    f"{action}{result}: {message} (key {signer}, request {request.request_id[:8]})"
                ),
            )
        self._answer(request, result, message, errcode=errcode, version=version)

    def _answer(
        self,
        request: ControlRequest,
        result: ControlResult,
        message: str,
        *,
        errcode: int | None = None,
        version: int | None = None,
    ) -> None:
        answer = ControlAnswer(
            request_id=request.request_id,
            action=request.action,
            app_id=request.app_id,
            result=result,
            errcode=errcode,
            message=message[:256],
            producer_id=self._producer_id,
            answered_at=self._clock(),
            version=version,
        )
        try:
            self._client.set(
                self._keys.control_answer(request.request_id),
                answer.encode(),
                nx=True,  # the first answer stands: a replay never rewrites it
                ex=ANSWER_TTL_S,
            )
        except REDIS_ERRORS as exc:
            log.error(
                "control request %s ended %s but its answer could not be stored (%s)",
                request,
                result,
                describe_redis_error(exc),
            )


def control_keys(settings: ProducerSettings) -> list[Ed25519PublicKey]:
    """The keys control requests may be signed with: WXTOKEN_CONTROL_KEYS only (not the
    keys trusted for overrides, nor the producer's own); none, and every one is refused."""
    keys = load_public_keys(settings.control_key_files(), setting="WXTOKEN_CONTROL_KEYS")
    if not keys:
        log.info(
            "WXTOKEN_CONTROL_KEYS is not set: control requests (wxtoken quota clear) are refused"
        )
    return keys
